"""The batch_generation operators. ``__init__`` stores arguments only; work happens in ``execute``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


def interval_values(context: Any) -> dict[str, Any]:
    """The run's logical date and data interval, for the spec's allow-listed URI placeholders."""
    from genbatch.schedule.templating import template_values

    return template_values(logical_date=context.get("logical_date"),
                           data_interval_start=context.get("data_interval_start"),
                           data_interval_end=context.get("data_interval_end"))


def prepare_or_skip(spec_data: dict[str, Any], run_id: str, context: Any, *, template_values: dict[str, Any],
                    started_by: dict[str, Any] | None = None) -> str:
    """prepare_run; a run dir already published with this spec skips the task (and so every stage after it)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from genbatch.errors import RunAlreadyPublished
    from genbatch.stages.prepare import prepare_run
    from models.registry import resolve_for_spec

    user = getattr(context.get("dag_run"), "triggering_user_name", None)
    try:
        return prepare_run(spec_data, run_id, resolve_model=resolve_for_spec, triggered_by=user,
                           template_values=template_values, started_by=started_by)
    except RunAlreadyPublished as done:
        raise AirflowSkipException(f"{done} (nothing is regenerated; the stages after this one skip)") from None


class PrepareRunOperator(BaseOperator):
    """Validate the params as a RunSpec, pin the model version, write spec.json; returns the run dir.

    A run dir that is already published with the same spec skips the run instead (a rerun of a
    published run id changes nothing)."""

    def execute(self, context: Any) -> str:
        return prepare_or_skip(dict(context["params"]), str(context["run_id"]), context,
                               template_values=interval_values(context))


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


class QualityGateOperator(_RunDirOperator):
    """Metrics + gates; fails the task (QualityGateFailed) when a gate misses."""

    def execute(self, context: Any) -> dict[str, Any]:
        from genbatch.stages.quality import quality_gate

        summary = quality_gate(self.run_dir)
        return {"passed": summary["passed"], "metrics": summary["metrics"]}


class PublishOperator(_RunDirOperator):
    """manifest.json then _SUCCESS; returns the manifest URI.

    Each outlet Asset event carries ``extra={"run_id", "contract_version", "run_uri", "manifest_uri",
    "success_uri", "counts"}`` with absolute URIs (``gs://`` or ``file://``), so a consumer DAG scheduled on
    the Asset knows which run to read (``genbatch.run.outputs.read(extra["run_uri"])``) and what to expect.
    """

    def execute(self, context: Any) -> str:
        from genbatch.stages.publish import publish, published_event

        event = published_event(self.run_dir, publish(self.run_dir))
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = event
        return str(event["manifest_uri"])


class CanaryVerdictOperator(_RunDirOperator):
    """After publish: with canary.auto_promote, a passing canary promotes the candidate (blue-green),
    a failing one removes the candidate alias; either way the verdict goes to the model's audit log."""

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import apply_canary_verdict

        return apply_canary_verdict(self.run_dir)
