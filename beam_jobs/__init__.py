"""Apache Beam pipelines (preprocessing). Runnable with ``python -m beam_jobs.preprocess``; no Airflow here."""
