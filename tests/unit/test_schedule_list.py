"""``genbatch schedule list``: next runs as Airflow's timetable computes them, last outcomes from real run dirs.

The run dirs are made the way a scheduled run makes them: the run id and placeholder values come from
``genbatch.schedule.runs.run_start`` (what prepare_run calls), the logical dates and intervals from
Airflow's own CronTriggerTimetable, spec.json from ``write_run_state``, ``_FAILED`` from
``genbatch.stages.failure.mark_failed``. ``_SUCCESS`` is written here with ``contract.success_marker``,
the same document ``genbatch.stages.publish`` writes last (running publish needs a whole generated run).
Outcomes are read on both backends: a local folder and gs:// on the emulator.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from genbatch.cli.commands import main
from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState, write_run_state
from genbatch.schedule.arrivals import event_key
from genbatch.schedule.listing import CronTicks, iso_utc, list_specs, table
from genbatch.schedule.runs import run_start
from genbatch.schedule.spec import ScheduledSpec, ScheduleSpec, load_scheduled_spec
from genbatch.schedule.templating import render_spec
from genbatch.stages.failure import mark_failed

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
MODEL = "model: {name: catalog-copy, alias: production}\ntask: text\n"


def write_spec(folder: Path, name: str, text: str) -> ScheduledSpec:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return load_scheduled_spec(path)


def make_specs(tmp_path: Path, out: str) -> Path:
    """A specs folder with a cron spec (dated output folders) and an arrival spec, both writing under ``out``."""
    folder = tmp_path / "specs"
    folder.mkdir()
    write_spec(folder, "nightly", f"""schedule:
  cron: "0 2 * * *"
  timezone: Europe/Berlin
  interval: P1D
  start_date: 2026-12-01
{MODEL}input: {{uri: "{tmp_path}/in/{{{{ ds }}}}.jsonl"}}
output: {{uri: "{out}/nightly/{{{{ data_interval_start | ds }}}}"}}
""")
    write_spec(folder, "inbox", f"""schedule:
  arrival: {{prefix: "{tmp_path}/inbox", pattern: "*.jsonl"}}
{MODEL}input: {{uri: "{{{{ event_uri }}}}"}}
output: {{uri: "{out}/events"}}
""")
    return folder


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    return make_specs(tmp_path, str(tmp_path / "out"))


def airflow_ticks(schedule: ScheduleSpec, until: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, dt.datetime]]:
    """(logical date, data interval start, end) of every run Airflow's timetable schedules from start_date
    up to the first one after ``until`` (catchup on: deterministic, no wall clock)."""
    from airflow.sdk.timezone import coerce_datetime
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable

    timetable = CronTriggerTimetable(schedule.cron_expression, timezone=schedule.timezone, interval=schedule.interval)
    restriction = TimeRestriction(earliest=coerce_datetime(schedule.start_date),
                                  latest=coerce_datetime(schedule.end_date), catchup=True)
    runs: list[tuple[dt.datetime, dt.datetime, dt.datetime]] = []
    last = None
    while not runs or runs[-1][2] <= until:
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        if info is None or info.data_interval is None or info.logical_date is None:
            break
        runs.append((info.logical_date, info.data_interval.start, info.data_interval.end))
        last = info.data_interval
    return runs


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.mark.parametrize(("cron", "timezone", "interval", "now"), [
    ("0 2 * * *", "Europe/Berlin", dt.timedelta(days=1), NOW),
    ("30 2 * * *", "Europe/Berlin", dt.timedelta(0), dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC)),  # 02:30 skipped
    ("0 * * * *", "Europe/Berlin", dt.timedelta(hours=1), dt.datetime(2026, 10, 25, 2, 30, tzinfo=dt.UTC)),  # fall back
    ("15 6 * * 1-5", "America/New_York", dt.timedelta(0), dt.datetime(2026, 3, 9, 1, tzinfo=dt.UTC)),
], ids=["daily-berlin", "dst-spring-gap", "hourly-dst-fall", "weekdays-new-york"])
def test_ticks_agree_with_airflows_cron_trigger_timetable(
    airflow_home: None, cron: str, timezone: str, interval: dt.timedelta, now: dt.datetime
) -> None:
    schedule = ScheduleSpec.model_validate({"cron": cron, "timezone": timezone, "interval": interval,
                                            "start_date": now - dt.timedelta(days=9)})
    runs = airflow_ticks(schedule, now)
    ticks = CronTicks(schedule)
    assert ticks.next_run(now) == runs[-1][2]
    assert ticks.past(now, 3) == [end for _, _, end in reversed(runs[:-1])][:3]
    for logical, start, end in runs:  # the logical date and interval each run gets, hence its run id
        run = ticks.run_for("nightly", end)
        assert run.values["logical_date"] == logical and run.values["data_interval_start"] == start
        assert run.run_id == f"nightly__{logical.astimezone(dt.UTC):%Y%m%dT%H%M%S}"


def test_start_and_end_date_bound_the_ticks() -> None:
    schedule = ScheduleSpec.model_validate({"cron": "0 2 * * *", "timezone": "UTC",
                                            "start_date": "2026-12-10T00:00:00Z", "end_date": "2026-12-20T00:00:00Z"})
    ticks = CronTicks(schedule)
    assert ticks.next_run(NOW) == dt.datetime(2026, 12, 10, 2, tzinfo=dt.UTC)  # not before start_date
    assert ticks.past(NOW, 3) == []
    later = dt.datetime(2026, 12, 25, tzinfo=dt.UTC)
    assert ticks.next_run(later) is None  # past end_date: the schedule has ended
    assert ticks.past(later, 2) == [dt.datetime(2026, 12, 19, 2, tzinfo=dt.UTC), dt.datetime(2026, 12, 18, 2, tzinfo=dt.UTC)]


def _run_dir(spec: ScheduledSpec, start: Any) -> RunState:
    """spec.json of the run ``start`` names, written as prepare_run writes it."""
    rendered = parse_spec(render_spec(spec.spec_data, start.values), source=str(spec.path))
    state = RunState(run_id=start.run_id, spec=rendered, model=ModelVersion("catalog-copy", 1, "file:///models/v1"),
                     layout=RunLayout.for_run(rendered.output.uri, start.run_id), num_shards=1,
                     started_by=start.started_by)
    write_run_state(state)
    return state


def cron_run(spec: ScheduledSpec, run: tuple[dt.datetime, dt.datetime, dt.datetime]) -> RunState:
    logical, start, end = run
    return _run_dir(spec, run_start(spec.name, "cron", airflow_run_id=f"scheduled__{logical.isoformat()}",
                                    logical_date=logical, data_interval_start=start, data_interval_end=end))


def publish_marker(state: RunState) -> None:
    """``_SUCCESS`` as publish writes it last (manifest bytes, generation 1, publish time)."""
    manifest = b'{"contract_version": 1}'
    storage.write_bytes(state.layout.manifest, manifest)
    storage.write_json(state.layout.success, contract.success_marker(state.run_id, manifest, 1, contract.now_iso()))


def by_name(rows: list[Any]) -> dict[str, Any]:
    return {r.name: r for r in rows}


def test_cron_outcomes_from_the_run_dirs_of_the_last_ticks(airflow_home: None, tmp_path: Path,
                                                            storage_root: str) -> None:
    specs = make_specs(tmp_path, storage_root)
    nightly = load_scheduled_spec(specs / "nightly.yaml")
    runs = airflow_ticks(nightly.schedule, NOW)[:-1]  # the ticks at or before NOW, oldest first
    assert [iso_utc(end) for _, _, end in runs[-3:]] == [
        "2026-12-04T01:00:00Z", "2026-12-05T01:00:00Z", "2026-12-06T01:00:00Z"]  # 02:00 Berlin

    row = by_name(list_specs(specs, now=NOW))["nightly"]
    assert row.next_run == "2026-12-07T01:00:00Z" and row.kind == "cron" and row.dag_id == "genbatch__nightly"
    assert row.starts == "cron 0 2 * * * Europe/Berlin, interval P1D"
    assert (row.last_run.outcome, row.last_run.tick, row.last_run.run_id) == ("not run", "2026-12-06T01:00:00Z", None)

    too_old = cron_run(nightly, runs[-4])  # 4 ticks back: outside the lookback
    publish_marker(too_old)
    assert by_name(list_specs(specs, now=NOW))["nightly"].last_run.outcome == "not run"

    oldest = cron_run(nightly, runs[-3])
    publish_marker(oldest)
    last = by_name(list_specs(specs, now=NOW))["nightly"].last_run
    assert (last.outcome, last.run_id, last.tick) == ("published", "nightly__20261203T010000", "2026-12-04T01:00:00Z")
    assert last.run_dir == oldest.layout.root and last.run_dir.rsplit("/", 2)[1] == "2026-12-03"

    newest = cron_run(nightly, runs[-1])
    last = by_name(list_specs(specs, now=NOW))["nightly"].last_run
    assert (last.outcome, last.run_id) == ("running", "nightly__20261205T010000")
    assert last.created_at == storage.read_json(newest.layout.spec)["created_at"]

    assert mark_failed(newest.layout.root, "validate_input", "12 of 40 rows failed the input suite")
    last = by_name(list_specs(specs, now=NOW))["nightly"].last_run
    assert (last.outcome, last.failed_task, last.reason) == ("failed", "validate_input",
                                                              "12 of 40 rows failed the input suite")


def test_event_spec_outcome_is_its_newest_run_by_created_at(tmp_path: Path, storage_root: str) -> None:
    specs = make_specs(tmp_path, storage_root)
    inbox = load_scheduled_spec(specs / "inbox.yaml")
    assert by_name(list_specs(specs, now=NOW))["inbox"].last_run.outcome == "not run"

    def arrival(version: str) -> Any:
        return run_start("inbox", "arrival", airflow_run_id=f"manual__{version}",
                         conf={"event": {"uri": f"{tmp_path}/inbox/a.jsonl", "version": version}})

    # Two versions whose run ids sort against their creation order: the newest is found by created_at.
    versions = [f"v{i}" for i in range(20)]
    first, second = next((a, b) for a in versions for b in versions
                         if event_key(f"{tmp_path}/inbox/a.jsonl", b) < event_key(f"{tmp_path}/inbox/a.jsonl", a))
    older = _run_dir(inbox, arrival(first))
    publish_marker(older)
    newer = _run_dir(inbox, arrival(second))
    assert newer.run_id < older.run_id
    other = load_scheduled_spec(specs / "nightly.yaml")  # another spec's run under the same base is not inbox's
    storage.write_json(RunLayout.for_run(f"{storage_root}/events", "nightly__x").spec,
                       {"run_id": "nightly__x", "created_at": "2999-01-01T00:00:00+00:00"})
    assert other.name == "nightly"

    row = by_name(list_specs(specs, now=NOW))["inbox"]
    assert row.next_run == "on event" and row.kind == "arrival"
    assert row.starts == f"arrival {tmp_path}/inbox (*.jsonl)"
    assert (row.last_run.outcome, row.last_run.run_id) == ("running", newer.run_id)
    mark_failed(newer.layout.root, "preprocess", "Beam: no rows left after dedupe")
    assert by_name(list_specs(specs, now=NOW))["inbox"].last_run.outcome == "failed"


def test_event_spec_with_a_templated_output_cannot_be_located(specs: Path, tmp_path: Path) -> None:
    write_spec(specs, "drops", f"""schedule:
  arrival: {{prefix: "{tmp_path}/drops", ready_marker: _READY}}
{MODEL}input: {{uri: "{{{{ event_uri }}}}"}}
output: {{uri: "{tmp_path}/out/{{{{ event_name }}}}"}}
""")
    row = by_name(list_specs(specs, now=NOW))["drops"]
    assert row.last_run.outcome == "unknown" and "placeholders" in (row.last_run.reason or "")
    assert row.starts == f"arrival {tmp_path}/drops (folders with _READY)"


def test_invalid_specs_are_listed_with_their_error_and_exit_1(
    specs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", "list", "--specs-dir", str(specs), "--now", "2026-12-06T12:00:00"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STARTS", "NEXT", "RUN", "(UTC)", "LAST", "RUN", "OUTCOME"]
    assert [ln.split()[0] for ln in lines[1:]] == ["inbox", "nightly"]
    column = lines[0].index("NEXT RUN")  # aligned: every row's next run starts under its heading
    assert lines[1][column:].startswith("on event") and lines[2][column:].startswith("2026-12-07T01:00:00Z")

    (specs / "broken.yaml").write_text(f"schedule: {{cron: 'every day', assets: [s3://x]}}\n{MODEL}")
    assert main(["schedule", "list", "--specs-dir", str(specs), "--json", "--now", "2026-12-06T12:00:00Z"]) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"broken", "inbox", "nightly"}
    assert rows["broken"]["dag_id"] is None and "schedule.cron" in rows["broken"]["error"]
    assert rows["nightly"]["error"] is None and rows["nightly"]["next_run"] == "2026-12-07T01:00:00Z"
    assert rows["nightly"]["last_run"]["outcome"] == "not run"

    text = table(list_specs(specs, now=NOW))
    assert text.splitlines()[1].split()[:2] == ["broken", "INVALID"] and "1 invalid spec file(s)" in text and "every day" in text


def test_an_unreadable_marker_makes_that_row_unknown_and_the_others_still_list(specs: Path, tmp_path: Path) -> None:
    inbox = load_scheduled_spec(specs / "inbox.yaml")
    state = _run_dir(inbox, run_start("inbox", "arrival", airflow_run_id="manual__1",
                                      conf={"event": {"uri": f"{tmp_path}/inbox/a.jsonl", "version": "1"}}))
    Path(state.layout.failed).write_text("{not json")  # e.g. a truncated copy
    rows = by_name(list_specs(specs, now=dt.datetime(2026, 12, 6, 12)))  # naive: read as UTC
    assert rows["inbox"].last_run.outcome == "unknown" and rows["inbox"].last_run.reason
    assert rows["nightly"].next_run == "2026-12-07T01:00:00Z"
