"""The batch pipeline's tasks after prepare_run, wired in the core's stage order.

``batch_generation`` (one-off runs from params) and every scheduled spec's DAG
(``dags/scheduled_specs.py``) differ only in how prepare_run gets its spec; the stages after it
are built here once, so both run exactly the same pipeline.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, BaseOperator

from genbatch.stages.sequence import STAGE_IDS
from operators.beam import PreprocessOperator
from operators.cost_check import CostCheckOperator
from operators.genbatch_operators import (
    CanaryVerdictOperator,
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


def add_batch_stages(prepare: BaseOperator, *, published: Asset) -> dict[str, Any]:
    """Add validate → preprocess → cost_check → generate[shard] → quality_gate → publish → canary_verdict
    after ``prepare`` in the DAG being defined; ``published`` is the Asset the publish task updates.
    Returns the tasks by id."""
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
    publish = PublishOperator(task_id="publish", run_dir=prepare.output, outlets=[published])
    canary = CanaryVerdictOperator(task_id="canary_verdict", run_dir=prepare.output, retries=0)

    # The order is the core's stage sequence; "generate" is the backend branch and its two mapped tasks.
    enters: dict[str, Any] = {"prepare_run": prepare, "validate_input": validate, "preprocess": preprocess,
                              "cost_check": cost_check, "generate": backend, "quality_gate": quality, "publish": publish}
    leaves: dict[str, Any] = {**enters, "generate": [generate_local, generate_kubernetes]}
    for before, after in zip(STAGE_IDS, STAGE_IDS[1:], strict=False):
        leaves[before] >> enters[after]
    backend >> [generate_local, generate_kubernetes]
    publish >> canary
    return {**enters, LOCAL_TASK: generate_local, KUBERNETES_TASK: generate_kubernetes, "canary_verdict": canary}
