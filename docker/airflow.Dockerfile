# The Airflow image: the official Airflow 3.3 image + the `airflow` and `beam` extras and the DAGs.
# `airflow` brings the providers, the google one included (the preprocess task submits Dataflow jobs
# with it); `beam` brings apache-beam for the launcher subprocess `python -m beam_jobs.preprocess`
# (the task's own process never imports it). Never the worker pins (torch, transformers, diffusers):
# shards run in worker pods, the Beam job's tokenizer work on the Beam workers' image.
# Build (from the repo root): docker build -f docker/airflow.Dockerfile -t REGION-docker.pkg.dev/PROJECT/genbatch/airflow:TAG .
FROM apache/airflow:3.3.2-python3.11

WORKDIR /opt/genbatch
COPY --chown=airflow:root pyproject.toml setup.cfg README.md constraints.txt ./
COPY --chown=airflow:root docker/pip-install.sh docker/pip-install.sh
COPY --chown=airflow:root genbatch ./genbatch
COPY --chown=airflow:root operators ./operators
COPY --chown=airflow:root beam_jobs ./beam_jobs
COPY --chown=airflow:root models ./models
RUN docker/pip-install.sh airflow,beam
COPY --chown=airflow:root dags /opt/airflow/dags

USER 50000
