"""``genbatch schedule list``: every spec of the specs folder, what starts it, when it runs next and how it last ended.

Read from the files alone, never from Airflow's database, so it answers on a laptop, in CI or in a
pod without DB access: the next run is the cron's next tick (CronTriggerTimetable's rules: the cron
read in ``schedule.timezone``, logical date = tick − ``schedule.interval``), and the last run is
found by rebuilding its run dir from the spec (rendered output.uri + run id, genbatch.schedule.runs)
and reading its markers (``_SUCCESS``, ``_FAILED``, ``spec.json``). Event-started runs carry an
input key in their id, so they are found by listing ``<name>__*`` under a fixed output.uri.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from croniter import croniter

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run.layout import RunLayout, find_run_dirs
from genbatch.schedule.runs import RunStart, run_start
from genbatch.schedule.spec import ScheduledSpec, ScheduleSpec, load_specs_folder
from genbatch.schedule.templating import has_placeholders, render

LOOKBACK_TICKS = 3  # a cron spec's last run is the newest run dir among this many past ticks
ON_EVENT = "on event"
OUTCOMES = ("published", "failed", "running", "not run", "unknown")


@dataclass(frozen=True)
class LastRun:
    """How the newest run found ended: ``published`` (_SUCCESS), ``failed`` (_FAILED), ``running`` (spec.json
    only), ``not run`` (no run dir) or ``unknown`` (the run dirs cannot be located or read: ``reason`` says why)."""

    outcome: str
    run_id: str | None = None
    run_dir: str | None = None
    tick: str | None = None  # cron: the tick the run belongs to (ISO UTC)
    created_at: str | None = None  # spec.json's: when prepare_run wrote it
    failed_task: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class SpecRow:
    """One file of the specs folder; ``error`` is set (and everything but name and file is empty) when invalid."""

    name: str
    file: str
    dag_id: str | None = None
    kind: str | None = None
    starts: str | None = None
    next_run: str | None = None  # ISO UTC, "on event", or None when the schedule has ended
    last_run: LastRun = field(default_factory=lambda: LastRun("not run"))
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The row as ``--json`` prints it."""
        return asdict(self)


def iso_utc(value: dt.datetime) -> str:
    """``2026-12-07T01:00:00Z``: how every time of the listing is printed."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_duration(value: dt.timedelta) -> str:
    """``P1D``, ``PT1H30M``: a data interval as the spec file writes it."""
    days, rest = divmod(int(value.total_seconds()), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    if not days and not time:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")


class CronTicks:
    """The ticks of one cron schedule, as Airflow's CronTriggerTimetable computes them (its DST handling:
    the cron is evaluated on the wall clock of the timezone; crons that fire every hour step in real time)."""

    def __init__(self, schedule: ScheduleSpec) -> None:
        self.expression = schedule.cron_expression
        self.tz = zoneinfo.ZoneInfo(schedule.timezone)
        self.every_hour = croniter(self.expression).expanded[1] == ["*"]
        self.start = schedule.start_date
        self.end = schedule.end_date
        self.interval = schedule.interval

    def _step(self, current: dt.datetime, forward: bool) -> dt.datetime:
        naive = current.astimezone(self.tz).replace(tzinfo=None)
        it = croniter(self.expression, start_time=naive)
        while True:  # a wall-clock time in a DST gap maps onto real time after it: step on until strictly past
            scheduled: dt.datetime = it.get_next(dt.datetime) if forward else it.get_prev(dt.datetime)
            if self.every_hour:
                found = current.astimezone(dt.UTC) + (scheduled - naive)
            else:
                found = scheduled.replace(tzinfo=self.tz).astimezone(dt.UTC)
            if (found > current) if forward else (found < current):
                return found

    def after(self, current: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``current``."""
        return self._step(current, forward=True)

    def before(self, current: dt.datetime) -> dt.datetime:
        """The last tick strictly before ``current``."""
        return self._step(current, forward=False)

    def first(self) -> dt.datetime:
        """The first tick at or after start_date."""
        return self.after(self.before(self.start))

    def next_run(self, now: dt.datetime) -> dt.datetime | None:
        """The next tick after ``now`` (not before start_date); None when it would be past end_date."""
        tick = max(self.after(now), self.first())
        return None if self.end is not None and tick > self.end else tick

    def past(self, now: dt.datetime, count: int) -> list[dt.datetime]:
        """Up to ``count`` ticks at or before ``now`` (and within start_date..end_date), newest first."""
        current = now if self.end is None or now < self.end else self.end
        tick = self.before(current)
        if self.after(tick) == current:  # ``current`` is itself a tick
            tick = current
        ticks: list[dt.datetime] = []
        first = self.first()
        while len(ticks) < count and tick >= first:
            ticks.append(tick)
            tick = self.before(tick)
        return ticks

    def run_for(self, name: str, tick: dt.datetime) -> RunStart:
        """The run of spec ``name`` at ``tick`` as prepare_run names it: logical date = tick − interval (as
        Airflow sets it), data interval [logical date, tick]."""
        logical = tick - self.interval
        return run_start(name, "cron", airflow_run_id="", logical_date=logical, data_interval_start=logical,
                         data_interval_end=tick)


def starts(spec: ScheduledSpec) -> str:
    """What starts a run of ``spec``, in one line."""
    s = spec.schedule
    if s.kind == "cron":
        shown = s.cron if s.cron == s.cron_expression else f"'{s.cron}'"
        return f"cron {shown} {s.timezone}" + (f", interval {iso_duration(s.interval)}" if s.interval else "")
    if s.kind == "assets":
        return "assets " + ", ".join(s.assets)
    if s.arrival is not None:
        a = s.arrival
        what = f"folders with {a.ready_marker}" if a.ready_marker else a.pattern
        return f"arrival {a.prefix} ({what})"
    assert s.queue is not None
    return f"queue {s.queue.scheme} {', '.join(s.queue.channels)}"


def run_outcome(run_dir: str, run_id: str, tick: str | None = None) -> LastRun:
    """The outcome of one run dir from its markers (``_SUCCESS`` wins: publish removes ``_FAILED``)."""
    layout = RunLayout(run_dir)
    created = _created_at(layout)
    if storage.exists(layout.success):
        return LastRun("published", run_id, run_dir, tick, created)
    if storage.exists(layout.failed):
        marker = storage.read_json(layout.failed)
        return LastRun("failed", run_id, run_dir, tick, created, failed_task=marker.get("failed_task"),
                       reason=marker.get("reason"))
    if created is not None:
        return LastRun("running", run_id, run_dir, tick, created)
    return LastRun("not run", run_id, run_dir, tick)


def _created_at(layout: RunLayout) -> str | None:
    if not storage.exists(layout.spec):
        return None
    return str(storage.read_json(layout.spec).get("created_at") or "") or None


def last_cron_run(spec: ScheduledSpec, now: dt.datetime, lookback: int = LOOKBACK_TICKS) -> LastRun:
    """The newest run dir among the last ``lookback`` ticks; ``not run`` (with the newest tick) when none has one."""
    ticks = CronTicks(spec.schedule)
    past = ticks.past(now, lookback)
    for tick in past:
        run = ticks.run_for(spec.name, tick)
        output = render(spec.spec.output.uri, run.values, where=f"{spec.path.name}: output.uri")
        found = run_outcome(RunLayout.for_run(output, run.run_id).root, run.run_id, iso_utc(tick))
        if found.outcome != "not run":
            return found
    return LastRun("not run", tick=iso_utc(past[0]) if past else None)


def last_event_run(spec: ScheduledSpec) -> LastRun:
    """The newest ``<name>__*`` run dir (by spec.json's created_at) under a fixed output.uri."""
    base = spec.spec.output.uri  # as written: the scheduled spec's RunSpec keeps placeholders unrendered
    if has_placeholders(base):
        return LastRun("unknown", reason=f"output.uri {base!r} has placeholders filled from each event: its runs "
                                         "cannot be found without the event")
    prefix = f"{spec.name}__"
    newest: tuple[str, str] | None = None
    for run_dir in find_run_dirs(base, depth=1):
        run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
        created = _created_at(RunLayout(run_dir)) if run_id.startswith(prefix) else None
        if created is not None and (newest is None or created > newest[0]):
            newest = (created, run_dir)
    if newest is None:
        return LastRun("not run")
    run_dir = newest[1]
    return run_outcome(run_dir, run_dir.rstrip("/").rsplit("/", 1)[-1])


def describe(spec: ScheduledSpec, now: dt.datetime) -> SpecRow:
    """The listing row of one valid spec at ``now``."""
    if spec.schedule.kind == "cron":
        tick = CronTicks(spec.schedule).next_run(now)
        next_run = iso_utc(tick) if tick is not None else None
    else:
        next_run = ON_EVENT
    try:
        last = last_cron_run(spec, now) if spec.schedule.kind == "cron" else last_event_run(spec)
    except (GenbatchError, ValueError) as exc:  # an unreadable bucket or marker: say so on this row, list the others
        last = LastRun("unknown", reason=str(exc))
    return SpecRow(name=spec.name, file=str(spec.path), dag_id=spec.dag_id, kind=spec.schedule.kind,
                   starts=starts(spec), next_run=next_run, last_run=last)


def list_specs(folder: Path | None = None, *, now: dt.datetime | None = None) -> list[SpecRow]:
    """A row per file of the specs folder (default $GENBATCH_SPECS_DIR), valid or not, sorted by name, as of
    ``now`` (default: the current time; a naive datetime is read as UTC)."""
    if now is None:
        now = dt.datetime.now(dt.UTC)
    now = now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)
    specs, errors = load_specs_folder(folder)
    rows = [describe(spec, now) for spec in specs]
    rows += [SpecRow(name=path.stem, file=str(path), error=error) for path, error in errors.items()]
    return sorted(rows, key=lambda r: r.name)


REASON_CHARS = 100  # of a failure reason in the table (--json has all of it)
COLUMNS = (("NAME", "name"), ("KIND", "kind"), ("STARTS", "starts"), ("NEXT RUN (UTC)", "next_run"),
           ("LAST RUN", "last_run"), ("OUTCOME", "outcome"))


def _cells(row: SpecRow) -> dict[str, str]:
    if row.error is not None:
        first = next((ln.strip() for ln in row.error.splitlines()[1:] if ln.strip()), row.error.splitlines()[0])
        return {"name": row.name, "kind": "INVALID", "starts": first, "next_run": "-", "last_run": "-", "outcome": "-"}
    last = row.last_run
    reason = (last.reason or "").strip().splitlines()[0][:REASON_CHARS] if last.reason else ""
    outcome = last.outcome + (f" in {last.failed_task}: {reason}" if last.outcome == "failed" else "")
    outcome += f" ({reason})" if last.outcome == "unknown" and reason else ""
    outcome += f" (last tick {last.tick})" if last.outcome == "not run" and last.tick else ""
    return {"name": row.name, "kind": row.kind or "", "starts": row.starts or "",
            "next_run": row.next_run or "none (after end_date)", "last_run": last.run_id or "-", "outcome": outcome}


def table(rows: list[SpecRow]) -> str:
    """An aligned text table, then each invalid file's full error (what the DAG processor's import error says)."""
    cells = [_cells(r) for r in rows]
    widths = {key: max([len(title)] + [len(c[key]) for c in cells]) for title, key in COLUMNS}
    lines = ["  ".join(title.ljust(widths[key]) for title, key in COLUMNS).rstrip()]
    lines += ["  ".join(c[key].ljust(widths[key]) for _, key in COLUMNS).rstrip() for c in cells]
    errors = [r.error for r in rows if r.error is not None]
    if errors:
        lines += ["", f"{len(errors)} invalid spec file(s); they get no DAG:"] + errors
    return "\n".join(lines)
