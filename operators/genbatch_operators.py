"""The batch_generation operators. ``__init__`` stores arguments only; work happens in ``execute``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class PrepareRunOperator(BaseOperator):
    """Validate the params as a RunSpec, pin the model version, write spec.json; returns the run dir."""

    def execute(self, context: Any) -> str:
        from genbatch.stages.prepare import prepare_run
        from models.registry import resolve_for_spec

        dag_run = context.get("dag_run")
        user = getattr(dag_run, "triggering_user_name", None)
        return prepare_run(dict(context["params"]), str(context["run_id"]), resolve_model=resolve_for_spec,
                           triggered_by=user)


class _RunDirOperator(BaseOperator):
    template_fields: Sequence[str] = ("run_dir",)

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir


class ValidateInputOperator(_RunDirOperator):
    """Great Expectations input suite; bad rows go to rejects/ with their rule."""

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.stages.validate import validate_input

        return validate_input(self.run_dir)


class PreprocessOperator(_RunDirOperator):
    """Beam preprocessing (in-process FnApiRunner here; Dataflow/Flink via ``beam_args``)."""

    template_fields: Sequence[str] = ("run_dir", "beam_args")

    def __init__(self, *, beam_args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beam_args = beam_args or []

    def execute(self, context: Any) -> list[int]:
        from beam_jobs.preprocess import run

        plan = run(["--run-dir", self.run_dir, *self.beam_args])
        return [s["shard"] for s in plan["shards"]]


class QualityGateOperator(_RunDirOperator):
    """Metrics + gates; fails the task (QualityGateFailed) when a gate misses."""

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.stages.quality import quality_gate

        summary = quality_gate(self.run_dir)
        return {"passed": summary["passed"], "metrics": summary["metrics"]}


class PublishOperator(_RunDirOperator):
    """manifest.json then _SUCCESS; returns the manifest URI.

    Each outlet Asset event carries ``extra={"run_dir", "manifest", "run_id"}`` so a consumer DAG
    scheduled on the Asset knows which run to read (``genbatch.run.outputs.read(extra["run_dir"])``).
    """

    def execute(self, context: Any) -> str:
        from genbatch.run.layout import RunLayout
        from genbatch.stages.publish import publish

        manifest = publish(self.run_dir)
        uri = RunLayout(self.run_dir).manifest
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"run_dir": self.run_dir, "manifest": uri,
                                                      "run_id": manifest["run_id"]}
        return uri


class CanaryVerdictOperator(_RunDirOperator):
    """After publish: with canary.auto_promote, a passing canary promotes the candidate (blue-green),
    a failing one removes the candidate alias; either way the verdict goes to the model's audit log."""

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.io import storage
        from genbatch.quality.canary import canary_path
        from genbatch.run.state import load_run_state
        from models.registry import audit, promote, update_aliases

        state = load_run_state(self.run_dir)
        if state.canary_model is None:
            return {"canary": False}
        verdict = storage.read_json(canary_path(state))
        spec = state.spec
        registry, name = spec.model.registry, state.model.name
        evidence = {"run_id": state.run_id, "canary": verdict}
        action = "recorded"
        if spec.canary.auto_promote and verdict["passed"]:
            promote(registry, name, state.canary_model.version, reason=f"canary passed in run {state.run_id}",
                    evidence=evidence, expect_production=state.model.version)
            action = "promoted"
        elif spec.canary.auto_promote:
            update_aliases(registry, name, {spec.canary.alias: None},
                           expect={spec.canary.alias: state.canary_model.version}, event="canary_rollback",
                           reason=f"canary failed in run {state.run_id}", evidence=evidence)
            action = "rolled_back"
        else:
            audit(registry, name, "canary_verdict", {"version": state.canary_model.version, "passed": verdict["passed"],
                                                     "evidence": evidence})
        return {"canary": True, "passed": verdict["passed"], "action": action}
