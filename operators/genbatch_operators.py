"""The batch_generation operators. ``__init__`` stores arguments only; work happens in ``execute``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from operators.worker_job import WorkerJob, WorkerJobOperator


def interval_values(context: Any) -> dict[str, Any]:
    """The run's logical date and data interval, for the spec's allow-listed URI placeholders."""
    from genbatch.schedule.templating import template_values

    return template_values(logical_date=context.get("logical_date"),
                           data_interval_start=context.get("data_interval_start"),
                           data_interval_end=context.get("data_interval_end"))


@contextlib.contextmanager
def skip_when_published() -> Iterator[None]:
    """A stage that finds its run published (``genbatch.stages.published``) skips: it wrote nothing."""
    from airflow.sdk.exceptions import AirflowSkipException

    from genbatch.errors import RunAlreadyPublished

    try:
        yield
    except RunAlreadyPublished as done:
        raise AirflowSkipException(str(done)) from None


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
    """Great Expectations input suite; bad rows go to rejects/ with their rule.

    Input that cannot be read as rows (a corrupt gzip, an unknown format, too many bad rows, a path outside
    the allowed prefixes) fails the task without retries: a retry reads the same bytes. Storage errors
    (a flaky bucket) stay retryable."""

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.errors import PathNotAllowedError, ShardInputError, SpecError
        from genbatch.stages.validate import validate_input

        try:
            with skip_when_published():
                return validate_input(self.run_dir)
        except (ShardInputError, SpecError, PathNotAllowedError) as exc:
            raise AirflowFailException(str(exc)) from exc


class _StageJobOperator(WorkerJobOperator):
    """A stage that reads every output of the run: inside the task up to ``execution.inline_max_rows``
    sharded items, above it the stage's worker command, a local process or a CPU pod
    (:mod:`genbatch.stages.stage_jobs`), so the Airflow worker's memory does not grow with the run."""

    template_fields: Sequence[str] = (*WorkerJobOperator.template_fields, "run_dir")
    stage = ""

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def worker_job(self, context: Any) -> WorkerJob:
        from genbatch.run.state import load_run_state
        from genbatch.stages.stage_jobs import stage_command
        from operators.pod_spec import stage_job_settings

        state = load_run_state(self.run_dir)
        execution, labels = stage_job_settings(state, self.stage)
        return WorkerJob(f"{self.stage} of run {state.run_id}", stage_command(self.stage, self.run_dir),
                         execution, labels)

    def execute(self, context: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.run.state import load_run_state
        from genbatch.stages.generate import WorkerFailed
        from genbatch.stages.published import ensure_unpublished
        from genbatch.stages.stage_jobs import EXIT_GATE_FAILED, gate_failure_message, run_stage, runs_inline

        state = load_run_state(self.run_dir)
        if self.stage == "quality_gate":  # (publish on a published run returns its manifest: a retry after
            with skip_when_published():  # _SUCCESS still announces the Asset event) - checked before any process
                ensure_unpublished(state.layout, self.stage)
        if runs_inline(state):
            return run_stage(self.stage, self.run_dir)
        try:
            return super().execute(context)
        except WorkerFailed as exc:  # a missed gate: the same outputs miss it again on a retry
            if exc.exit_code == EXIT_GATE_FAILED:
                raise AirflowFailException(gate_failure_message(self.run_dir)) from exc
            raise


class QualityGateOperator(_StageJobOperator):
    """Metrics + gates; fails the task (QualityGateFailed) when a gate misses."""

    stage = "quality_gate"


class PublishOperator(_StageJobOperator):
    """manifest.json then _SUCCESS; returns the manifest URI.

    Each outlet Asset event carries ``extra={"run_id", "contract_version", "run_uri", "manifest_uri",
    "success_uri", "counts"}`` with absolute URIs (``gs://`` or ``file://``), so a consumer DAG scheduled on
    the Asset knows which run to read (``genbatch.run.outputs.read(extra["run_uri"])``) and what to expect.
    """

    stage = "publish"

    def _announce(self, context: Any) -> str:
        """The outlet events' extra, read back from the committed manifest whichever process published."""
        from genbatch.io import storage
        from genbatch.run.layout import RunLayout
        from genbatch.stages.publish import published_event

        event = published_event(self.run_dir, dict(storage.read_json(RunLayout(self.run_dir).manifest)))
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = event
        return str(event["manifest_uri"])

    def execute(self, context: Any) -> str:
        super().execute(context)
        return self._announce(context)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """After a deferred publish pod (the provider resumes here)."""
        super().trigger_reentry(context, event)
        return self._announce(context)


class CanaryVerdictOperator(_RunDirOperator):
    """After publish: with canary.auto_promote, a passing canary promotes the candidate (blue-green),
    a failing one removes the candidate alias; either way the verdict goes to the model's audit log."""

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import apply_canary_verdict

        return apply_canary_verdict(self.run_dir)
