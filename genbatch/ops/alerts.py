"""Failure alerts: one Slack-compatible JSON POST to a webhook per failed task.

The payload is what an on-call person needs and nothing else: DAG, run, task (and map index),
try number, a one-paragraph exception summary and the log URL. Secrets stay out: the summary is
redacted and the webhook URL (which carries its token) is never logged. Posting is best effort:
an alert that cannot be delivered is logged and dropped, never raised. No Airflow import here
(DESIGN.md): operators/alerts.py turns the task context into a :class:`FailureAlert`.

Details: docs/internals.md#genbatchopsalerts
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from genbatch.ops.logs import redact

log = logging.getLogger(__name__)

WEBHOOK_VARIABLE = "GENBATCH_ALERT_WEBHOOK"  # Airflow Variable (or env AIRFLOW_VAR_GENBATCH_ALERT_WEBHOOK)
TIMEOUT_S = 5.0
MAX_EXCEPTION_CHARS = 600


@dataclass(frozen=True)
class FailureAlert:
    """The facts of one failed task instance."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    exception: str
    log_url: str | None

    def payload(self) -> dict[str, object]:
        """The webhook body: a Slack ``text`` (task, run, try, exception, log link) plus every field at the top level."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        text = (f":red_circle: *{self.dag_id}.{task}* failed (run `{self.run_id}`, try {self.try_number})\n"
                f"```{self.exception}```")
        if self.log_url:
            text += f"\n<{self.log_url}|task log>"
        return {"text": text, **asdict(self)}


def summarise_exception(error: BaseException | str | None) -> str:
    """``Type: message`` in at most MAX_EXCEPTION_CHARS characters, with secret values redacted."""
    if error is None:
        return "(no exception: the task was marked failed)"
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    text = redact(text.strip())
    return text if len(text) <= MAX_EXCEPTION_CHARS else text[: MAX_EXCEPTION_CHARS - 1] + "…"


def webhook_host(url: str) -> str:
    """What may be logged about a webhook URL: scheme and host, never the path or query (the token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def post(url: str, payload: dict[str, object], *, timeout_s: float = TIMEOUT_S) -> int | None:
    """POST ``payload`` as JSON; the HTTP status, or None when it could not be delivered. Never raises."""
    if urlsplit(url).scheme not in ("http", "https"):
        log.warning("alert webhook %s is not an http(s) URL; alert dropped", webhook_host(url))
        return None
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "genbatch-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - scheme checked above
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        log.warning("alert webhook %s answered %s; alert dropped", webhook_host(url), exc.code)
        return int(exc.code)
    except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad URLs: the message may hold the URL
        log.warning("alert webhook %s unreachable (%s); alert dropped", webhook_host(url), type(exc).__name__)
        return None
    log.info("failure alert posted to %s (%s)", webhook_host(url), status)
    return status


def send(url: str | None, alert: FailureAlert, *, timeout_s: float = TIMEOUT_S) -> int | None:
    """Post ``alert`` to ``url`` when one is configured."""
    if not url:
        return None
    return post(url, alert.payload(), timeout_s=timeout_s)
