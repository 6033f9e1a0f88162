"""Model registry, loading, generation runners, the shard worker and the tiny model zoo.

Nothing here depends on Airflow: the worker is a plain module with a CLI.
"""
