"""The local development stack, outside the product package: a real Airflow and a GCS emulator.

``airflow_stack`` (PostgreSQL, api-server, scheduler, dag-processor, triggerer for ``make airflow``),
``gcs_emulator`` (fake-gcs-server on 127.0.0.1) and ``gcs_run`` (``make run-gcs``). Tests and
benchmarks use it; nothing in ``genbatch``, ``models``, ``operators`` or ``dags`` imports it.
"""
