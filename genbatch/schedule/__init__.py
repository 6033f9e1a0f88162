"""Scheduled and event-driven runs: a folder of specs with a ``schedule`` section (docs/operations.md, "Scheduling").

The core half: the schedule section's model, the allow-listed URI placeholders, run ids derived from
the schedule, arrivals in a watched prefix, and the list of scheduled specs. No Airflow here; the DAG
factory (``operators.scheduled``) and the arrival trigger (``operators.triggers``) build on it.
"""
