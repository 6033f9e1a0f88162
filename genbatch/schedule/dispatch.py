"""From watcher events to runs: one run per input version, named after it, whatever delivered it.

The events DAG of an arrival or queue spec hands the asset events that woke it to :func:`plan_runs`,
which turns each into the Airflow run to start (``trigger_run_id`` + ``conf``). Airflow never starts
two runs with one id, so an object announced twice, a message published twice or redelivered, or two
events batched into one wake-up start one run. A message that names no readable input is rejected
with the reason (the events run then fails, naming it), never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.schedule.arrivals import Arrival, event_key
from genbatch.schedule.runs import EVENT_CONF_KEY
from genbatch.schedule.templating import has_placeholders


@dataclass
class Plan:
    """Runs to start (TriggerDagRunOperator kwargs) and the events that could not start one, with why."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _message(payload: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """A queue message's JSON body and its id (the body's ``id``, else a hash of the body)."""
    data = payload.get("data")
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    if not isinstance(data, str):
        raise ValueError(f"the message has no text body (got {type(data).__name__})")
    try:
        body = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the message is not JSON ({exc.msg} at character {exc.pos}): send "
                         '{"input_uri": "gs://...", "id": "..."}') from None
    if not isinstance(body, dict) or not isinstance(body.get("input_uri"), str) or not body["input_uri"]:
        raise ValueError('the message names no input: send {"input_uri": "gs://...", "id": "..."}')
    message_id = str(body["id"]) if body.get("id") is not None else hashlib.sha256(data.encode()).hexdigest()[:16]
    return body, message_id


def _checked_input(uri: str) -> Arrival:
    """The input a message names, confined to the allowed prefixes, at its current version."""
    if has_placeholders(uri):
        raise ValueError(f"input_uri {uri!r} contains template syntax; send a plain URI")
    allowed = storage.allowed_prefixes_from_env()
    if allowed:
        storage.confine(uri, allowed)
    try:
        return Arrival(uri=uri, version=storage.version(uri))
    except FileNotFoundError:
        raise ValueError(f"input_uri {uri!r} does not exist; write the input before sending the message") from None


def plan_runs(kind: str, extras: Iterable[Mapping[str, Any]]) -> Plan:
    """The runs to start for the asset events' ``extra`` dicts (``{"payload": ...}`` from the watcher)."""
    plan, planned = Plan(), set()
    for extra in extras:
        payload = dict(extra.get("payload") or {})
        event: dict[str, Any]
        try:
            if kind == "arrival":
                arrival = Arrival(uri=str(payload["uri"]), version=str(payload["version"]))
                event = {"uri": arrival.uri, "version": arrival.version}
            else:
                body, message_id = _message(payload)
                arrival = _checked_input(body["input_uri"])
                event = {"uri": arrival.uri, "version": arrival.version, "message_id": message_id,
                         "channel": payload.get("channel")}
        except (ValueError, KeyError, GenbatchError) as exc:  # bad message, path not allowed, storage error
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            plan.rejected.append({"event": payload, "reason": reason})
            continue
        key = event_key(arrival.uri, arrival.version)
        if key in planned:
            continue
        planned.add(key)
        event["key"] = key
        plan.runs.append({"trigger_run_id": f"{kind}__{key}", "conf": {EVENT_CONF_KEY: event}})
    return plan
