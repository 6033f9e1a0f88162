"""Operators of the model_optimization DAG: build an optimised variant, register it, announce it.

The build (quantise / prune / distil) needs torch, so it runs as the worker command
``genbatch model build-variant`` (:mod:`operators.worker_job`), never in the Airflow task itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator

from operators.worker_job import WorkerJob, WorkerJobOperator

REGISTERED = Asset("genbatch://registry/version-registered")


class MethodsOperator(BaseOperator):
    """The list of methods from the params, so the build can be mapped (one task per variant)."""

    def execute(self, context: Any) -> list[str]:
        return list(context["params"]["methods"])


class OptimizeVersionOperator(WorkerJobOperator):
    """Build one variant of a registry version, register it with lineage, emit the registration Asset.

    Where the build runs is the DAG's ``execution`` param (the RunSpec's execution section: backend,
    image, GPUs...): an optimisation has no run spec of its own, and the same form field as a batch
    run's says it. The default is a local process.
    """

    template_fields: Sequence[str] = (*WorkerJobOperator.template_fields, "method")

    def __init__(self, *, method: Any, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [REGISTERED])
        super().__init__(**kwargs)
        self.method = method

    def worker_job(self, context: Any) -> WorkerJob:
        from genbatch.errors import SpecError
        from genbatch.run.spec import ExecutionSpec
        from genbatch.stages.model_jobs import BUILD_VARIANT, build_variant_command
        from models.model_jobs import variant_result_uri
        from operators.pod_spec import model_job_labels

        p = context["params"]
        try:
            execution = ExecutionSpec.model_validate(p.get("execution") or {})
        except ValueError as exc:
            raise SpecError(f"model_optimization param execution: {exc}") from None
        registry, model, version, run_id = p["registry"], p["model"], int(p["version"]), str(context["run_id"])
        command = build_variant_command(registry, model, version, str(self.method),
                                        variant_result_uri(registry, model, run_id, str(self.method)),
                                        set_candidate_alias=bool(p.get("set_candidate_alias")))
        return WorkerJob(f"{self.method} variant of {model}@{version}", command, execution,
                        model_job_labels(BUILD_VARIANT, model, version, run_id))

    def execute(self, context: Any) -> Any:
        return self._announce(context, super().execute(context))

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """A deferred pod finished: its result came back through the XCom sidecar."""
        return self._announce(context, super().trigger_reentry(context, event))

    def _announce(self, context: Any, result: dict[str, Any]) -> dict[str, Any]:
        p = context["params"]
        context["outlet_events"][REGISTERED].extra = {"model": p["model"], "version": result["version"],
                                                      "registry": p["registry"], "method": self.method}
        return result
