"""URI placeholders of scheduled specs: a small allow-list of date and event fields, never Jinja.

A scheduled spec's ``input.uri`` and ``output.uri`` may say ``{{ ds }}`` or
``{{ data_interval_start | ds_nodash }}``; nothing else between braces is accepted, so a spec (or a
trigger's conf) can never run code in the scheduler or a worker. Rendering is plain string
substitution from values the run already has (its logical date, data interval, or the event that
started it).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from genbatch.errors import SpecError

# The date fields of a clock-started run, and the filters that format a date field.
DATE_FIELDS = ("ds", "ds_nodash", "ts", "ts_nodash", "logical_date", "data_interval_start", "data_interval_end")
EVENT_FIELDS = ("event_uri", "event_dir", "event_name")
FILTERS: dict[str, str] = {"ds": "%Y-%m-%d", "ds_nodash": "%Y%m%d", "ts_nodash": "%Y%m%dT%H%M%S",
                           "hour": "%H", "year": "%Y", "month": "%m", "day": "%d"}
# Bare names that are shorthands of a filter on the logical date (Airflow's own template names).
_SHORTHANDS = {"ds": "ds", "ds_nodash": "ds_nodash", "ts_nodash": "ts_nodash"}
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*)?\}\}")
_ANY_TEMPLATE = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
TEMPLATED_FIELDS = (("input", "uri"), ("output", "uri"))


def placeholders(text: str) -> list[tuple[str, str | None]]:
    """The ``(field, filter)`` pairs in ``text``; ValueError for any other template syntax."""
    found = [(m.group(1), m.group(2)) for m in PLACEHOLDER.finditer(text)]
    rest = PLACEHOLDER.sub("", text)
    if _ANY_TEMPLATE.search(rest):
        raise ValueError(f"{text!r}: only placeholders like '{{{{ ds }}}}' or '{{{{ data_interval_start | ds_nodash }}}}' "
                         f"are allowed (fields: {', '.join(DATE_FIELDS + EVENT_FIELDS)}; filters: {', '.join(FILTERS)})")
    for name, filt in found:
        if name not in DATE_FIELDS + EVENT_FIELDS:
            raise ValueError(f"{text!r}: unknown placeholder field {name!r}; allowed: {', '.join(DATE_FIELDS + EVENT_FIELDS)}")
        if filt is not None and (filt not in FILTERS or name in EVENT_FIELDS or name in _SHORTHANDS or name == "ts"):
            raise ValueError(f"{text!r}: filter {filt!r} cannot apply to {name!r}; date filters ({', '.join(FILTERS)}) "
                             "apply to logical_date, data_interval_start and data_interval_end")
    return found


def check_placeholders(text: str, *, allowed: tuple[str, ...]) -> None:
    """ValueError when ``text`` has bad template syntax or a field outside ``allowed`` (by trigger kind)."""
    for name, _ in placeholders(text):
        if name not in allowed:
            raise ValueError(f"{text!r}: {{{{ {name} }}}} is not available here; available: {', '.join(allowed) or 'none'}")


def has_placeholders(text: str) -> bool:
    """Whether ``text`` holds any template syntax at all (allowed or not)."""
    return bool(_ANY_TEMPLATE.search(text))


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    raise TypeError(f"not a datetime: {value!r}")


def template_values(*, logical_date: Any = None, data_interval_start: Any = None, data_interval_end: Any = None,
                    event_uri: str | None = None) -> dict[str, Any]:
    """The values a run can fill placeholders from (missing ones stay out: using them is an error)."""
    values: dict[str, Any] = {}
    logical = _as_datetime(logical_date)
    for name, value in (("logical_date", logical), ("data_interval_start", _as_datetime(data_interval_start)),
                        ("data_interval_end", _as_datetime(data_interval_end))):
        if value is not None:
            values[name] = value
    if logical is not None:
        values["ts"] = logical
        for name in _SHORTHANDS:
            values[name] = logical
    if event_uri:
        values["event_uri"] = event_uri.rstrip("/")
        parent, _, leaf = event_uri.rstrip("/").rpartition("/")
        values["event_dir"] = parent
        values["event_name"] = leaf
    return values


def _format(name: str, filt: str | None, value: Any) -> str:
    if isinstance(value, dt.datetime):
        fmt = FILTERS.get(filt or _SHORTHANDS.get(name, ""))
        return value.strftime(fmt) if fmt else value.isoformat()
    return str(value)


def render(text: str, values: Mapping[str, Any], *, where: str) -> str:
    """``text`` with its placeholders filled from ``values``; SpecError naming ``where`` when one has no value."""
    try:
        placeholders(text)
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None

    def fill(match: re.Match[str]) -> str:
        name, filt = match.group(1), match.group(2)
        if name not in values:
            kind = "an event (arrival or queue message)" if name in EVENT_FIELDS else "a logical date (a scheduled run)"
            raise SpecError(f"{where}: {{{{ {name} }}}} needs {kind}, and this run has none; trigger it through its "
                            "schedule or event, or write the URI without placeholders")
        return _format(name, filt, values[name])

    return PLACEHOLDER.sub(fill, text)


def render_spec(spec_data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a spec mapping with ``input.uri`` and ``output.uri`` rendered (other fields are never templated)."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in spec_data.items()}
    for section, key in TEMPLATED_FIELDS:
        part = out.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and has_placeholders(part[key]):
            part[key] = render(part[key], values, where=f"{section}.{key}")
    return out
