"""The batch_generation operators. ``__init__`` stores arguments only; work happens in ``execute``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class PrepareRunOperator(BaseOperator):
    """Validate the params as a RunSpec, pin the model version, write spec.json; returns the run dir."""

    def execute(self, context: Any) -> str:
        from genbatch.stages import prepare_run
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
        from genbatch.stages import validate_input

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
        from genbatch.quality import quality_gate

        summary = quality_gate(self.run_dir)
        return {"passed": summary["passed"], "metrics": summary["metrics"]}


class PublishOperator(_RunDirOperator):
    """manifest.json then _SUCCESS; returns the manifest URI.

    Each outlet Asset event carries ``extra={"run_dir", "manifest", "run_id"}`` so a consumer DAG
    scheduled on the Asset knows which run to read (``genbatch.outputs.read(extra["run_dir"])``).
    """

    def execute(self, context: Any) -> str:
        from genbatch.layout import RunLayout
        from genbatch.manifest import publish

        manifest = publish(self.run_dir)
        uri = RunLayout(self.run_dir).manifest
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {"run_dir": self.run_dir, "manifest": uri,
                                                      "run_id": manifest["run_id"]}
        return uri
