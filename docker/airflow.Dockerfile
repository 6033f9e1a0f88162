# The Airflow image: the `airflow` and `beam` extras, never torch (the worker runs in its own pods).
# Not built in CI here (no container engine on these machines).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml setup.cfg README.md constraints.txt /opt/genbatch/
COPY --chown=airflow:root genbatch /opt/genbatch/genbatch
COPY --chown=airflow:root operators /opt/genbatch/operators
COPY --chown=airflow:root beam_jobs /opt/genbatch/beam_jobs
COPY --chown=airflow:root models /opt/genbatch/models
COPY --chown=airflow:root dags /opt/airflow/dags
RUN pip install --no-cache-dir -c /opt/genbatch/constraints.txt "/opt/genbatch[airflow,beam]"
