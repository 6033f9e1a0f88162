"""The DAGs' ``on_failure_callback``s: post a failed task to the alert webhook (genbatch.ops.alerts), and
mark the run failed (``_FAILED``, genbatch.stages.failure) so consumers waiting on it stop waiting.

Set the webhook as the Airflow Variable ``GENBATCH_ALERT_WEBHOOK`` (UI, CLI, a secrets backend,
or the environment variable ``AIRFLOW_VAR_GENBATCH_ALERT_WEBHOOK``). It is deliberately not a
``GENBATCH_*`` environment variable: those are passed on to the worker processes and pods
(genbatch.stages.generate), and a webhook URL carries its own token. Without it the callback does nothing.

Airflow calls this only when a task has failed for good (not on a failure that will be retried).
It never raises: whatever goes wrong is logged as one warning line without the URL.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _webhook_url() -> str | None:
    from airflow.sdk import Variable

    from genbatch.ops.alerts import WEBHOOK_VARIABLE

    url = str(Variable.get(WEBHOOK_VARIABLE, default=None) or "").strip()
    return url or None


def notify_failure(context: Any) -> None:
    """``on_failure_callback``: one Slack-compatible POST with the task's facts; never raises."""
    try:
        url = _webhook_url()
        if not url:
            return
        from airflow.sdk._shared.secrets_masker import redact
        from airflow.sdk.log import mask_secret

        from genbatch.ops.alerts import FailureAlert, send, summarise_exception

        mask_secret(url, name="alert_webhook")  # the URL is a credential: keep it out of task logs
        ti = context["ti"]
        alert = FailureAlert(
            dag_id=str(ti.dag_id),
            run_id=str(ti.run_id),
            task_id=str(ti.task_id),
            map_index=_map_index(ti),
            try_number=int(ti.try_number or 0),
            exception=str(redact(summarise_exception(context.get("exception")))),
            log_url=getattr(ti, "log_url", None),
        )
        send(url, alert)
    except Exception as exc:  # noqa: BLE001 - an alert must never turn into a second failure
        log.warning("failure alert not sent: %s", type(exc).__name__)


def _map_index(ti: Any) -> int:
    """The task instance's map index; -1 when it is not mapped."""
    map_index = getattr(ti, "map_index", -1)
    return -1 if map_index is None else int(map_index)


def _task_name(ti: Any) -> str:
    """``generate_local[2]`` for a mapped task instance, the task id otherwise (as the alert names it)."""
    return str(ti.task_id) if _map_index(ti) < 0 else f"{ti.task_id}[{_map_index(ti)}]"


def mark_run_failed(context: Any) -> None:
    """``on_failure_callback``: write the run's ``_FAILED`` (task, redacted reason, time); never raises.

    The run dir is prepare_run's return value: when prepare_run itself failed there is no run to mark
    (refused params write nothing anywhere), and the trigger's caller has the error.
    """
    try:
        from airflow.sdk._shared.secrets_masker import redact

        from genbatch.ops.alerts import summarise_exception
        from genbatch.stages.failure import mark_failed

        ti = context["ti"]
        run_dir = ti.xcom_pull(task_ids="prepare_run") if ti.task_id != "prepare_run" else None
        if not run_dir:
            return
        mark_failed(str(run_dir), _task_name(ti), str(redact(summarise_exception(context.get("exception")))),
                    try_number=int(ti.try_number or 0), airflow_run_id=str(ti.run_id))
    except Exception as exc:  # noqa: BLE001 - a marker must never turn into a second failure
        log.warning("run not marked failed: %s", type(exc).__name__)


def on_each_task_failure(dag: Any, *callbacks: Any) -> None:
    """Give every task of ``dag`` these ``on_failure_callback``s, instead of putting them in default_args.

    Same callbacks on the same tasks, cheaper parses: Airflow serializes a callable in a DAG's default_args
    as its Python source (``inspect.getsource``, ~0.5 ms each, for every DAG on every parse: about a quarter of the
    serialization of 200 scheduled specs), while a task's callbacks serialize as a ``has_on_failure_callback``
    flag. Call it after the DAG's last task is added.
    """
    for task in dag.tasks:
        task.on_failure_callback = list(callbacks)
