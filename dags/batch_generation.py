"""batch_generation: validate → preprocess → generate[shard] → quality_gate → publish → canary verdict.

Thin on purpose: no I/O and no heavy imports at parse time. Params come from the RunSpec
JSON schema, so the trigger form, the REST API and ``genbatch run`` accept the same spec.
Scheduled specs get the same stages in DAGs of their own (``dags/scheduled_specs.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset

from operators.alerts import mark_run_failed, notify_failure
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
    default_args={"owner": "genbatch", "retries": 2, "retry_delay": timedelta(seconds=5),
                  "on_failure_callback": [notify_failure, mark_run_failed]},
) as dag:
    add_batch_stages(PrepareRunOperator(task_id="prepare_run", retries=0), published=PUBLISHED)
