"""Operators of the model_promotion DAG: resolve → evaluate both arms → decide (promote or reject).

Resolving and deciding read and write the registry only, in the task; each evaluation is a worker
command (:mod:`operators.worker_job`), so no task here imports torch, transformers, diffusers or Beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from operators.worker_job import WorkerJob, WorkerJobOperator


class ResolveVersionsOperator(BaseOperator):
    """Pin production and the candidate (alias or version) to versions, before any evaluation."""

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import resolve_arms

        events = (context.get("triggering_asset_events") or {}).values()
        return resolve_arms(dict(context["params"]), [dict(e.extra or {}) for evs in events for e in evs])


class EvaluateVersionOperator(WorkerJobOperator):
    """Run one version on the model's golden set through the batch pipeline; returns the evaluation.

    The work is the worker command ``genbatch model evaluate-arm`` (a local process or a pod, as the
    policy spec's ``execution.backend`` says): the batch pipeline needs Beam and torch, which the
    Airflow image does not carry.
    """

    template_fields: Sequence[str] = (*WorkerJobOperator.template_fields, "versions")

    def __init__(self, *, arm: str, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arm = arm
        self.versions = versions

    def worker_job(self, context: Any) -> WorkerJob:
        from genbatch.run.spec import parse_spec
        from genbatch.stages.model_jobs import EVALUATE_ARM, evaluate_arm_command
        from models.model_jobs import evaluation_result_uri, evaluation_run_id
        from models.promotion import evaluation_spec
        from operators.pod_spec import model_job_labels

        registry, model, version = self.versions["registry"], self.versions["model"], int(self.versions[self.arm])
        spec = parse_spec(evaluation_spec(registry, model, version), source=f"the promotion policy of {model}")
        run_id = evaluation_run_id(str(context["run_id"]), self.arm, version)
        command = evaluate_arm_command(registry, model, version, run_id, evaluation_result_uri(registry, model, run_id))
        return WorkerJob(f"evaluation of {model}@{version} ({self.arm})", command, spec.execution,
                        model_job_labels(EVALUATE_ARM, model, version, run_id), spot=spec.cost.spot)


class DecidePromotionOperator(BaseOperator):
    """Compare with bootstrap CIs, then blue-green promote or record an audited rejection."""

    template_fields: Sequence[str] = ("production", "candidate", "versions")

    def __init__(self, *, production: Any, candidate: Any, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.production = production
        self.candidate = candidate
        self.versions = versions

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import decide

        return decide(self.production, self.candidate, self.versions)
