"""The DAG factory of scheduled specs: one DAG per spec file, the same stages as batch_generation.

``dags/scheduled_specs.py`` calls :func:`build_dags` on the specs folder. Per spec ``NAME``:
- ``genbatch__NAME`` runs the pipeline. Its prepare_run takes the spec from the file, fills the
  allow-listed URI placeholders from the run's logical date and interval (or the event), and names
  the run ``NAME__<logical date>`` or ``NAME__<event key>``;
- for ``arrival`` and ``queue`` specs, ``genbatch__NAME__events`` is scheduled on an Asset whose
  watcher (ArrivalTrigger, or the common-messaging MessageQueueTrigger) runs in the triggerer; it turns
  the events that woke it into runs of ``genbatch__NAME`` named after the input version, so the same
  input never starts two runs.
Invalid spec files become one import error of ``dags/scheduled_specs_errors.py`` that names each
file and field, while every valid spec still gets its DAG from ``dags/scheduled_specs.py``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, AssetWatcher, BaseOperator

from operators.alerts import mark_run_failed, notify_failure, on_each_task_failure
from operators.batch_stages import add_batch_stages
from operators.genbatch_operators import prepare_or_skip

if TYPE_CHECKING:
    from pathlib import Path

    from genbatch.schedule.spec import QueueSpec, ScheduledSpec

log = logging.getLogger(__name__)
DEFAULT_ARGS: dict[str, Any] = {"owner": "genbatch", "retries": 2, "retry_delay": timedelta(seconds=5)}


class ScheduledPrepareRunOperator(BaseOperator):
    """prepare_run of a scheduled spec: the spec is the file's (not params), URIs and run id come from the
    logical date or the event; a published run dir for that interval or input skips the run."""

    def __init__(self, *, spec_name: str, kind: str, spec_data: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_name = spec_name
        self.kind = kind
        self.spec_data = spec_data

    def execute(self, context: Any) -> str:
        from genbatch.schedule.runs import run_start

        dag_run = context.get("dag_run")
        start = run_start(self.spec_name, self.kind, airflow_run_id=str(context["run_id"]),
                          logical_date=context.get("logical_date"),
                          data_interval_start=context.get("data_interval_start"),
                          data_interval_end=context.get("data_interval_end"),
                          conf=getattr(dag_run, "conf", None) or {}, dag_id=self.dag_id)
        self.log.info("run %s started by %s", start.run_id, start.started_by)
        return prepare_or_skip({**self.spec_data, "run_id": start.run_id}, str(context["run_id"]), context,
                               template_values=start.values, started_by=start.started_by)


class PlanEventRunsOperator(BaseOperator):
    """The events DAG's first task: the runs to start for the asset events that woke it (one per input
    version); events that name no usable input are pushed as XCom ``rejected`` with the reason."""

    def __init__(self, *, kind: str, inputs: Asset, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.inputs = inputs

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from genbatch.schedule.dispatch import plan_runs

        events = context["triggering_asset_events"][self.inputs]
        plan = plan_runs(self.kind, [dict(e.extra or {}) for e in events])
        self.log.info("%d event(s): %d run(s) to start, %d rejected", len(events), len(plan.runs), len(plan.rejected))
        for rejected in plan.rejected:
            self.log.error("event rejected: %s (%s)", rejected["reason"], rejected["event"])
        context["ti"].xcom_push(key="rejected", value=plan.rejected)
        return plan.runs


class CheckRejectedEventsOperator(BaseOperator):
    """Fails the events run when an event was rejected, naming each one (after the good ones started)."""

    def execute(self, context: Any) -> None:
        rejected = context["ti"].xcom_pull(task_ids="plan_runs", key="rejected") or []
        if rejected:
            reasons = "; ".join(f"{r['reason']} (event: {str(r['event'])[:200]})" for r in rejected)
            raise ValueError(f"{len(rejected)} event(s) started no run: {reasons}")


@cache
def _cron_timetable(expression: str, timezone: str, interval: timedelta) -> Any:
    """One timetable per (cron, timezone, interval), shared by the specs that have it: each new one loads
    cron_descriptor's locale to describe its cron (~1 ms, on every parse), and a timetable never changes."""
    from airflow.timetables.trigger import CronTriggerTimetable

    return CronTriggerTimetable(expression, timezone=timezone, interval=interval)


def _main_schedule(spec: ScheduledSpec) -> Any:
    s = spec.schedule
    if s.kind == "cron":
        return _cron_timetable(s.cron_expression, s.timezone, s.interval)
    if s.kind == "assets":
        return [Asset(uri) for uri in s.assets]
    return None  # started by its events DAG


def _queue_trigger(queue: QueueSpec) -> Any:
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    kwargs: dict[str, Any] = dict(queue.options)
    if queue.scheme == "redis+pubsub":
        kwargs.setdefault("channels", list(queue.channels))
        kwargs.setdefault("poll_interval", 1)
        if queue.conn_id:
            kwargs.setdefault("redis_conn_id", queue.conn_id)
    elif queue.scheme == "kafka":
        kwargs.setdefault("topics", list(queue.channels))
        if queue.conn_id:
            kwargs.setdefault("kafka_config_id", queue.conn_id)
    else:
        kwargs.setdefault("subscription", queue.channels[0])
        if queue.conn_id:
            kwargs.setdefault("gcp_conn_id", queue.conn_id)
    return MessageQueueTrigger(scheme=queue.scheme, **kwargs)


def _inputs_asset(spec: ScheduledSpec) -> Asset:
    """The Asset the spec's watcher updates: one event per arrival or message."""
    from operators.triggers import ArrivalTrigger

    s = spec.schedule
    if s.arrival is not None:
        trigger: Any = ArrivalTrigger(prefix=s.arrival.prefix, pattern=s.arrival.pattern,
                                      ready_marker=s.arrival.ready_marker, poll_s=s.arrival.poll_s)
    else:
        assert s.queue is not None
        trigger = _queue_trigger(s.queue)
    return Asset(name=f"{spec.dag_id}__inputs", uri=f"genbatch://{spec.dag_id}/inputs",
                 watchers=[AssetWatcher(name=f"{spec.dag_id}__watcher", trigger=trigger)])


def _doc(spec: ScheduledSpec) -> str:
    return (f"**Scheduled spec `{spec.path.name}`** ({spec.schedule.kind}). The spec is the file: edit it, not "
            "this DAG. Runs are named `<spec>__<logical date or input key>`; clearing a run resumes the same run "
            "dir, and a published one is never rewritten (prepare_run skips). See docs/operations.md, Scheduling.")


def build_spec_dags(spec: ScheduledSpec) -> list[DAG]:
    """The pipeline DAG of one spec, and its events DAG when arrivals or messages start it."""
    s = spec.schedule
    tags = ["genbatch", "scheduled", s.kind]
    with DAG(dag_id=spec.dag_id, description=f"genbatch scheduled spec {spec.path.name} ({s.kind})",
             schedule=_main_schedule(spec), start_date=s.start_date, end_date=s.end_date, catchup=s.catchup,
             max_active_runs=s.max_active_runs, tags=tags, doc_md=_doc(spec), default_args=DEFAULT_ARGS) as main:
        prepare = ScheduledPrepareRunOperator(task_id="prepare_run", spec_name=spec.name, kind=s.kind,
                                              spec_data=spec.spec_data, retries=0)
        add_batch_stages(prepare, published=Asset(f"genbatch://{spec.dag_id}/published"))
    on_each_task_failure(main, notify_failure, mark_run_failed)
    if s.kind not in ("arrival", "queue"):
        return [main]
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    inputs = _inputs_asset(spec)
    with DAG(dag_id=spec.events_dag_id, description=f"starts {spec.dag_id} once per new input ({s.kind})",
             schedule=[inputs], start_date=s.start_date, catchup=False, max_active_runs=1, tags=tags,
             doc_md=_doc(spec), default_args=DEFAULT_ARGS) as events:
        plan = PlanEventRunsOperator(task_id="plan_runs", kind=s.kind, inputs=inputs)
        start = TriggerDagRunOperator.partial(
            task_id="start_runs", trigger_dag_id=spec.dag_id, skip_when_already_exists=True,
            wait_for_completion=False,
        ).expand_kwargs(plan.output)
        check = CheckRejectedEventsOperator(task_id="check_rejected", trigger_rule="all_done", retries=0)
        plan >> start >> check
    on_each_task_failure(events, notify_failure)
    return [main, events]


def build_dags(folder: Path | None = None) -> dict[str, DAG]:
    """Every valid spec's DAGs, by DAG id (what dags/scheduled_specs.py puts in its globals).

    Invalid files are skipped here and reported by dags/scheduled_specs_errors.py: Airflow marks every
    DAG of a file with an import error stale, so the error must live in a file of its own. A spec that
    validates but fails to build (a bug) is logged and skipped, never taking the other specs down.

    A task process parses this file only to find its own DAG (Airflow's parsing context names it): then
    only that spec's DAGs are built, so a task does not pay for every spec of the folder.
    """
    from airflow.sdk import get_parsing_context

    from genbatch.schedule.spec import load_specs_folder

    wanted = get_parsing_context().dag_id
    specs, _ = load_specs_folder(folder)
    dags: dict[str, DAG] = {}
    for spec in specs:
        if wanted and wanted not in (spec.dag_id, spec.events_dag_id):
            continue
        try:
            built = build_spec_dags(spec)
        except Exception:  # noqa: BLE001 - one spec's bug must not stop the other specs' DAGs
            log.exception("scheduled spec %s: building its DAG failed; its DAG is left out", spec.path)
            continue
        for dag in built:
            dags[dag.dag_id] = dag
    return dags

