"""How a scheduled spec's run is named and what it records: from its logical date, or the event that started it.

The run id is ``<spec name>__<logical date>`` for clock-started runs (``nightly__20261206T020000``) and
``<spec name>__<event key>`` for arrivals and messages. Clearing an interval, backfilling over it or a
redelivered message therefore lands in the same run dir, where prepare resumes an unfinished run and
refuses to touch a published one (genbatch.stages.prepare.refuse_published).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genbatch.errors import SpecError
from genbatch.run.spec import sanitize_run_id
from genbatch.schedule.arrivals import Arrival, event_key, input_identity
from genbatch.schedule.templating import template_values

EVENT_CONF_KEY = "event"


@dataclass(frozen=True)
class RunStart:
    """What prepare needs from the schedule: run id, placeholder values, and the record for spec.json."""

    run_id: str
    values: dict[str, Any]
    started_by: dict[str, Any]


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def event_from_conf(conf: Mapping[str, Any] | None, *, dag_id: str) -> Arrival:
    """The event a dispatcher (or a person) handed an event-started run in ``conf["event"]``.

    A manual trigger may give only ``{"event": {"uri": ...}}``: the input's version is read then.
    """
    event = (conf or {}).get(EVENT_CONF_KEY)
    if not isinstance(event, Mapping) or not isinstance(event.get("uri"), str) or not event["uri"]:
        raise SpecError(f"{dag_id} starts from an event (a new input or a queue message): its runs need "
                        f'conf {{"{EVENT_CONF_KEY}": {{"uri": "<input URI>"}}}}; its {dag_id}__events DAG starts '
                        "them this way, or trigger it by hand with that conf")
    if isinstance(event.get("version"), str):
        return Arrival(uri=event["uri"], version=event["version"])
    return input_identity(event["uri"])


def run_start(name: str, kind: str, *, airflow_run_id: str, logical_date: dt.datetime | None = None,
              data_interval_start: dt.datetime | None = None, data_interval_end: dt.datetime | None = None,
              conf: Mapping[str, Any] | None = None, dag_id: str = "") -> RunStart:
    """The run id, placeholder values and ``started_by`` record of one run of scheduled spec ``name``."""
    started: dict[str, Any] = {"kind": kind, "spec": name, "airflow_run_id": airflow_run_id}
    if kind in ("arrival", "queue"):
        arrival = event_from_conf(conf, dag_id=dag_id or name)
        event = dict((conf or {}).get(EVENT_CONF_KEY) or {})
        started.update(uri=arrival.uri, version=arrival.version, key=event_key(arrival.uri, arrival.version))
        if event.get("message_id") is not None:
            started["message_id"] = str(event["message_id"])
        return RunStart(run_id=f"{name}__{started['key']}", values=template_values(event_uri=arrival.uri),
                        started_by=started)
    if logical_date is not None:
        # All three dates in UTC, as the run id: {{ data_interval_start | ds }} is the same calendar as {{ ds }}.
        logical = _utc(logical_date)
        start = None if data_interval_start is None else _utc(data_interval_start)
        end = None if data_interval_end is None else _utc(data_interval_end)
        started.update(logical_date=_iso(logical), data_interval=[_iso(start), _iso(end)])
        values = template_values(logical_date=logical, data_interval_start=start, data_interval_end=end)
        return RunStart(run_id=f"{name}__{logical.strftime('%Y%m%dT%H%M%S')}", values=values, started_by=started)
    # An asset-started run (or a manual one without a logical date): named after the Airflow run.
    return RunStart(run_id=sanitize_run_id(f"{name}__{airflow_run_id}"), values={}, started_by=started)
