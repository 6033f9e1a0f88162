"""batch_generation: validate → preprocess → generate[shard] → quality_gate → publish → canary verdict.

Thin on purpose: no I/O and no heavy imports at parse time. Params come from the RunSpec
JSON schema, so the trigger form, the REST API and ``genbatch run`` accept the same spec.
Scheduled specs get the same stages in DAGs of their own (``dags/scheduled_specs.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Airflow's DAG processor imports the ``airflow.*`` modules a DAG file names once, in its own long-lived
# process, before it forks the child that parses the file ([dag_processor] parsing_pre_import_modules,
# on by default). Naming here the providers that operators/ builds on spares every parse of this file
# their import: ~0.7 s, mostly the Kubernetes clients behind KubernetesPodOperator
# (bench/dag_parse_stack.py); tests/unit/test_scheduled_dags.py checks the list is complete.
import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401
import airflow.providers.google.assets.bigquery  # noqa: F401 (asset URI handlers: loaded with the first Asset)
import airflow.providers.google.assets.gcs  # noqa: F401
import airflow.providers.standard.operators.branch  # noqa: F401
from airflow.sdk import DAG, Asset

from operators.alerts import mark_run_failed, notify_failure, on_each_task_failure
from operators.batch_stages import add_batch_stages
from operators.genbatch_operators import PrepareRunOperator
from operators.params import spec_params

PUBLISHED = Asset("genbatch://batch_generation/published")

with DAG(
    dag_id="batch_generation",
    description="Batch generation with a generative model, from validated input to a published manifest.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    params=spec_params(),
    tags=["genbatch"],
    default_args={"owner": "genbatch", "retries": 2, "retry_delay": timedelta(seconds=5)},
) as dag:
    add_batch_stages(PrepareRunOperator(task_id="prepare_run", retries=0), published=PUBLISHED)
on_each_task_failure(dag, notify_failure, mark_run_failed)
