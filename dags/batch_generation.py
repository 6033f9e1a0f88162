"""batch_generation: validate → preprocess → generate[shard] → quality_gate → publish → canary verdict.

Thin on purpose: no I/O and no heavy imports at parse time. Params come from the RunSpec
JSON schema, so the trigger form, the REST API and ``genbatch run`` accept the same spec.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset

from genbatch.stages.sequence import STAGE_IDS
from operators.alerts import mark_run_failed, notify_failure
from operators.cost_check import CostCheckOperator
from operators.genbatch_operators import (
    CanaryVerdictOperator,
    PrepareRunOperator,
    PreprocessOperator,
    PublishOperator,
    QualityGateOperator,
    ValidateInputOperator,
)
from operators.generate import (
    DEVICE_POOL,
    KUBERNETES_TASK,
    LOCAL_TASK,
    ChooseBackendOperator,
    GenbatchPodOperator,
    LocalShardOperator,
)
from operators.params import spec_params

PUBLISHED = Asset("genbatch://batch_generation/published")


def _generate_doc(what: str, skipped_on: str, ran_in: str) -> str:
    """A generate task's doc_md: why one of the two always shows as skipped (the branch, not a fault)."""
    return (f"**Generate, one mapped task per shard: {what}.**\n\n"
            "`choose_backend` runs exactly one of `generate_local` and `generate_kubernetes`, from the spec's "
            f"`execution.backend`. {skipped_on} this task shows as **skipped**: that is the branch choosing "
            f"the other backend, not a failure. The shards ran in `{ran_in}`.\n")


LOCAL_DOC = _generate_doc("local processes (`execution.backend: local`, the default)",
                          "On Kubernetes runs", KUBERNETES_TASK)
KUBERNETES_DOC = _generate_doc("one Kubernetes pod each (`execution.backend: kubernetes`)",
                               "On local runs (the default: `genbatch run`'s embedded Airflow, `make run`, "
                               "`make airflow` with a local spec)", LOCAL_TASK)

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
    prepare = PrepareRunOperator(task_id="prepare_run", retries=0)
    validate = ValidateInputOperator(task_id="validate_input", run_dir=prepare.output)
    preprocess = PreprocessOperator(task_id="preprocess", run_dir=prepare.output)
    cost_check = CostCheckOperator(task_id="cost_check", run_dir=prepare.output, retries=0)
    backend = ChooseBackendOperator(task_id="choose_backend", run_dir=prepare.output)
    # The pool goes in .partial(): a mapped task never sees the operator's __init__ default.
    generate_local = LocalShardOperator.partial(
        task_id=LOCAL_TASK, run_dir=prepare.output, pool=DEVICE_POOL, doc_md=LOCAL_DOC
    ).expand(shard=preprocess.output)
    generate_kubernetes = GenbatchPodOperator.partial(
        task_id=KUBERNETES_TASK, run_dir=prepare.output, doc_md=KUBERNETES_DOC
    ).expand(shard=preprocess.output)
    quality = QualityGateOperator(
        task_id="quality_gate", run_dir=prepare.output, trigger_rule="none_failed_min_one_success", retries=0
    )
    publish = PublishOperator(task_id="publish", run_dir=prepare.output, outlets=[PUBLISHED])
    canary = CanaryVerdictOperator(task_id="canary_verdict", run_dir=prepare.output, retries=0)

    # The order is the core's stage sequence; "generate" is the backend branch and its two mapped tasks.
    enters: dict[str, Any] = {"prepare_run": prepare, "validate_input": validate, "preprocess": preprocess,
                              "cost_check": cost_check, "generate": backend, "quality_gate": quality, "publish": publish}
    leaves: dict[str, Any] = {**enters, "generate": [generate_local, generate_kubernetes]}
    for before, after in zip(STAGE_IDS, STAGE_IDS[1:], strict=False):
        leaves[before] >> enters[after]
    backend >> [generate_local, generate_kubernetes]
    publish >> canary
