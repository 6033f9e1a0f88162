"""Scheduled specs: the URI placeholder allow-list, the schedule section, spec files and the folder of them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from genbatch.cli.commands import main
from genbatch.errors import SpecError
from genbatch.schedule.spec import ScheduleSpec, load_scheduled_spec, load_specs_folder, parse_scheduled_spec
from genbatch.schedule.templating import (
    DATE_FIELDS,
    EVENT_FIELDS,
    check_placeholders,
    render,
    render_spec,
    template_values,
)

LOGICAL = dt.datetime(2026, 12, 6, 2, 3, 4, tzinfo=dt.UTC)
START = dt.datetime(2026, 12, 5, 2, 0, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)
VALUES = template_values(logical_date=LOGICAL, data_interval_start=START, data_interval_end=END,
                         event_uri="gs://bucket/in/2026-12-06/batch.jsonl")
BASE: dict[str, Any] = {"task": "text", "input": {"uri": "in.jsonl"}, "model": {"name": "m", "alias": "production"},
                        "output": {"uri": "runs/out"}}


def scheduled(schedule: dict[str, Any] | None, **sections: Any) -> dict[str, Any]:
    return {**BASE, "schedule": schedule, **sections}


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


# --------------------------------------------------------------------------- templating


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ ds }}", "2026-12-06"),
    ("{{ds_nodash}}", "20261206"),
    ("{{ ts }}", "2026-12-06T02:03:04+00:00"),
    ("{{ ts_nodash }}", "20261206T020304"),
    ("{{ logical_date }}", "2026-12-06T02:03:04+00:00"),
    ("{{ data_interval_start }}", "2026-12-05T02:00:00+00:00"),
    ("{{ data_interval_end }}", "2026-12-06T02:00:00+00:00"),
    ("{{ event_uri }}", "gs://bucket/in/2026-12-06/batch.jsonl"),
    ("{{ event_dir }}", "gs://bucket/in/2026-12-06"),
    ("{{ event_name }}", "batch.jsonl"),
])
def test_each_field_renders(text: str, expected: str) -> None:
    assert render(f"gs://b/x/{text}/y", VALUES, where="output.uri") == f"gs://b/x/{expected}/y"


@pytest.mark.parametrize(("filt", "expected"), [
    ("ds", "2026-12-05"), ("ds_nodash", "20261205"), ("ts_nodash", "20261205T020000"), ("hour", "02"),
    ("year", "2026"), ("month", "12"), ("day", "05"),
])
def test_each_filter_formats_a_date_field(filt: str, expected: str) -> None:
    assert render(f"{{{{ data_interval_start | {filt} }}}}", VALUES, where="input.uri") == expected
    assert render(f"{{{{data_interval_start|{filt}}}}}", VALUES, where="input.uri") == expected


def test_every_field_and_filter_is_covered_above() -> None:
    """The allow-list is what the parametrizations above check: a new field needs a case there."""
    assert set(DATE_FIELDS) == {"ds", "ds_nodash", "ts", "ts_nodash", "logical_date", "data_interval_start",
                                "data_interval_end"}
    assert set(EVENT_FIELDS) == {"event_uri", "event_dir", "event_name"}


def test_several_placeholders_in_one_uri() -> None:
    text = "gs://b/{{ logical_date | year }}/{{ logical_date | month }}/{{ logical_date | day }}/{{ event_name }}"
    assert render(text, VALUES, where="output.uri") == "gs://b/2026/12/06/batch.jsonl"


def test_an_event_folder_uri_loses_its_trailing_slash() -> None:
    values = template_values(event_uri="gs://bucket/in/drop-7/")
    assert [render(f"{{{{ {f} }}}}", values, where="input.uri") for f in EVENT_FIELDS] == [
        "gs://bucket/in/drop-7", "gs://bucket/in", "drop-7"]


def test_string_dates_from_airflow_are_read_as_iso() -> None:
    values = template_values(logical_date="2026-12-06T02:03:04+00:00", data_interval_start="2026-12-05T00:00:00+00:00")
    assert render("{{ ds }}/{{ data_interval_start | ds_nodash }}", values, where="output.uri") == "2026-12-06/20261205"


@pytest.mark.parametrize(("text", "named"), [
    ("gs://b/{{ foo }}", "'foo'"),
    ("gs://b/{{ config }}", "'config'"),
    ("gs://b/{% if ds %}x{% endif %}", "{% if ds %}"),
    ("gs://b/{{ x.__class__ }}", "x.__class__"),
    ("gs://b/{{ ds.__class__.__mro__ }}", "ds.__class__.__mro__"),
    ("gs://b/{# a comment #}", "{# a comment #}"),
    ("gs://b/{{ ds }", "{{ ds }"),
    ("gs://b/{{ event_uri | ds }}", "'event_uri'"),
    ("gs://b/{{ event_name | upper }}", "'event_name'"),
    ("gs://b/{{ logical_date | upper }}", "'upper'"),
    ("gs://b/{{ ds | ds_nodash }}", "'ds'"),
    ("gs://b/{{ ts | hour }}", "'ts'"),
])
def test_anything_beyond_the_allow_list_is_refused_naming_it(text: str, named: str) -> None:
    with pytest.raises(SpecError) as exc:
        render(text, VALUES, where="output.uri")
    message = str(exc.value)
    assert message.startswith("output.uri: ") and named in message
    with pytest.raises(ValueError, match="only placeholders|unknown placeholder|cannot apply"):
        check_placeholders(text, allowed=DATE_FIELDS + EVENT_FIELDS)


@pytest.mark.parametrize(("where", "text", "needs"), [
    ("input.uri", "gs://b/{{ ds }}.jsonl", "a logical date"),
    ("output.uri", "runs/{{ data_interval_start | ds }}", "a logical date"),
    ("input.uri", "{{ event_uri }}", "an event"),
    ("output.uri", "runs/{{ event_name }}", "an event"),
])
def test_a_placeholder_without_a_value_names_the_field(where: str, text: str, needs: str) -> None:
    with pytest.raises(SpecError) as exc:
        render_spec({**BASE, where.split(".")[0]: {"uri": text}}, {})
    assert str(exc.value).startswith(f"{where}: ") and needs in str(exc.value)


def test_a_cron_run_has_no_event_values_and_an_event_run_no_dates() -> None:
    with pytest.raises(SpecError, match=r"^input.uri: \{\{ event_uri \}\} needs an event"):
        render("{{ event_uri }}", template_values(logical_date=LOGICAL), where="input.uri")
    with pytest.raises(SpecError, match=r"^output.uri: \{\{ ds \}\} needs a logical date"):
        render("runs/{{ ds }}", template_values(event_uri="in/a.jsonl"), where="output.uri")
    # A cron run without a data interval (none handed in): the interval fields stay unfilled.
    with pytest.raises(SpecError, match=r"data_interval_end \}\} needs a logical date"):
        render("{{ data_interval_end | ds }}", template_values(logical_date=LOGICAL), where="output.uri")


def test_render_spec_fills_only_the_two_uris_and_leaves_the_input_alone() -> None:
    data = {**BASE, "input": {"uri": "in/{{ ds }}.jsonl", "format": "jsonl"}, "output": {"uri": "runs/{{ ds_nodash }}"},
            "generation": {"prompt_prefix": "{{ ds }}"}}
    out = render_spec(data, VALUES)
    assert out["input"] == {"uri": "in/2026-12-06.jsonl", "format": "jsonl"}
    assert out["output"] == {"uri": "runs/20261206"}
    assert out["generation"] == {"prompt_prefix": "{{ ds }}"}, "other fields are never templated"
    assert data["input"]["uri"] == "in/{{ ds }}.jsonl", "the caller's mapping is not changed"


# --------------------------------------------------------------------------- the schedule section


@pytest.mark.parametrize(("schedule", "got"), [
    ({}, ""),
    ({"cron": "@daily", "assets": ["s3://b/k"]}, " (got cron, assets)"),
    ({"cron": "0 1 * * *", "arrival": {"prefix": "in/"}}, " (got cron, arrival)"),
    ({"arrival": {"prefix": "in/"}, "queue": {"channels": ["c"]}}, " (got arrival, queue)"),
])
def test_exactly_one_trigger(schedule: dict[str, Any], got: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ScheduleSpec.model_validate(schedule)
    assert ("set exactly one of schedule.cron, schedule.assets, schedule.arrival or schedule.queue" + got
            in str(exc.value))


@pytest.mark.parametrize("cron", ["61 * * * *", "not a cron", "@every5m", "* * *"])
def test_a_bad_cron_is_refused(cron: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ScheduleSpec.model_validate({"cron": cron})
    [error] = exc.value.errors()
    assert error["loc"] == ("cron",) and repr(cron) in error["msg"] and "@daily" in error["msg"]


def test_a_bad_timezone_is_refused() -> None:
    with pytest.raises(ValidationError) as exc:
        ScheduleSpec.model_validate({"cron": "@daily", "timezone": "Mars/Olympus_Mons"})
    [error] = exc.value.errors()
    assert error["loc"] == ("timezone",) and "'Mars/Olympus_Mons' is not an IANA timezone" in error["msg"]
    assert ScheduleSpec.model_validate({"cron": "@daily", "timezone": "Europe/Berlin"}).timezone == "Europe/Berlin"


def test_a_naive_start_or_end_date_is_utc_and_an_aware_one_is_kept() -> None:
    s = ScheduleSpec.model_validate({"cron": "@daily", "start_date": "2026-03-01T04:00:00",
                                     "end_date": "2026-04-01", "timezone": "Europe/Berlin"})
    assert s.start_date == dt.datetime(2026, 3, 1, 4, tzinfo=dt.UTC) and s.start_date.utcoffset() == dt.timedelta(0)
    assert s.end_date == dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
    aware = ScheduleSpec.model_validate({"cron": "@daily", "start_date": "2026-03-01T04:00:00+02:00"})
    assert aware.start_date.utcoffset() == dt.timedelta(hours=2)


@pytest.mark.parametrize(("preset", "expression"), [
    ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"), ("@quarterly", "0 0 1 */3 *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"),
    ("15 2 * * 1-5", "15 2 * * 1-5"),
])
def test_presets_expand(preset: str, expression: str) -> None:
    s = ScheduleSpec.model_validate({"cron": preset})
    assert (s.kind, s.cron, s.cron_expression) == ("cron", preset, expression)
    assert s.placeholder_fields() == DATE_FIELDS


def test_kinds_and_their_placeholders() -> None:
    cases = {"assets": ({"assets": ["s3://b/k"]}, ()),
             "arrival": ({"arrival": {"prefix": "gs://b/in/"}}, EVENT_FIELDS),
             "queue": ({"queue": {"channels": ["orders"]}}, EVENT_FIELDS)}
    for kind, (schedule, fields) in cases.items():
        s = ScheduleSpec.model_validate(schedule)
        assert (s.kind, s.placeholder_fields()) == (kind, fields)
    arrival = ScheduleSpec.model_validate({"arrival": {"prefix": "in/"}}).arrival
    assert arrival is not None and (arrival.pattern, arrival.ready_marker, arrival.poll_s) == ("*.jsonl", None, 30.0)
    queue = ScheduleSpec.model_validate({"queue": {"channels": ["orders"]}}).queue
    assert queue is not None and queue.scheme == "redis+pubsub"


@pytest.mark.parametrize(("schedule", "loc"), [
    ({"arrival": {"prefix": "gs://b/{{ ds }}/"}}, ("arrival", "prefix")),
    ({"arrival": {"prefix": "in/", "poll_s": 0.1}}, ("arrival", "poll_s")),
    ({"arrival": {"prefix": "in/", "patern": "*.csv"}}, ("arrival", "patern")),
    ({"queue": {"channels": []}}, ("queue", "channels")),
    ({"queue": {"channels": ["c"], "scheme": "sqs"}}, ("queue", "scheme")),
    ({"cron": "@daily", "max_active_runs": 0}, ("max_active_runs",)),
])
def test_bad_arrival_and_queue_fields_are_named(schedule: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScheduleSpec.model_validate(schedule)
    assert [e["loc"] for e in exc.value.errors()] == [loc]


# --------------------------------------------------------------------------- spec files


def test_a_valid_cron_spec(tmp_path: Path) -> None:
    data = scheduled({"cron": "0 2 * * *", "timezone": "Europe/Berlin", "interval": "P1D"},
                     input={"uri": "gs://b/in/{{ data_interval_start | ds }}.jsonl"},
                     output={"uri": "gs://b/runs/{{ ds }}"})
    spec = load_scheduled_spec(write_yaml(tmp_path / "nightly-catalog.yaml", data))
    assert (spec.name, spec.dag_id, spec.events_dag_id) == ("nightly-catalog", "genbatch__nightly-catalog",
                                                            "genbatch__nightly-catalog__events")
    assert spec.schedule.interval == dt.timedelta(days=1)
    assert "schedule" not in spec.spec_data
    assert spec.spec_data["output"] == {"uri": "gs://b/runs/{{ ds }}"}, "kept unrendered for each run"
    assert spec.spec.output.uri == "gs://b/runs/{{ ds }}"


def test_every_bad_field_of_a_file_is_named_in_one_message(tmp_path: Path) -> None:
    path = tmp_path / "nightly.yaml"
    data = scheduled({"cron": "61 2 * * *", "timezone": "Nowhere/City"}, model={"nmae": "m", "alias": "production"},
                     sharding={"num_shards": 0})
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(data, path)
    message = str(exc.value)
    assert message.startswith(f"{path}: 5 invalid field(s):")
    for field in ("schedule.cron", "schedule.timezone", "model.name", "model.nmae", "sharding.num_shards"):
        assert f"  - {field}: " in message, field
    assert "'61 2 * * *' is not a cron expression" in message and "unknown field" in message


@pytest.mark.parametrize("name", ["Nightly.yaml", "night ly.yaml", "_nightly.yaml", "nightly.v2.yaml",
                                  "a" * 65 + ".yaml"])
def test_a_file_name_that_cannot_be_a_dag_id_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(scheduled({"cron": "@daily"}), path)
    assert str(exc.value).startswith(f"{path}: the file name {name!r} is the spec's name and DAG id")


def test_a_run_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(scheduled({"cron": "@daily"}, run_id="fixed"), tmp_path / "nightly.yaml")
    assert "1 invalid field(s)" in str(exc.value) and "  - run_id: " in str(exc.value)


def test_event_placeholders_are_refused_on_a_cron_spec(tmp_path: Path) -> None:
    data = scheduled({"cron": "@daily"}, input={"uri": "{{ event_uri }}"}, output={"uri": "runs/{{ event_name }}"})
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(data, tmp_path / "nightly.yaml")
    message = str(exc.value)
    assert "2 invalid field(s)" in message
    assert "  - input.uri: '{{ event_uri }}': {{ event_uri }} is not available here" in message
    assert "  - output.uri: 'runs/{{ event_name }}': {{ event_name }} is not available here" in message
    assert "available: ds, ds_nodash" in message and "(schedule kind: cron)" in message


@pytest.mark.parametrize("schedule", [{"arrival": {"prefix": "gs://b/in/"}}, {"queue": {"channels": ["orders"]}}])
def test_date_placeholders_are_refused_on_an_event_spec(tmp_path: Path, schedule: dict[str, Any]) -> None:
    data = scheduled(schedule, input={"uri": "{{ event_uri }}"}, output={"uri": "runs/{{ ds }}"})
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(data, tmp_path / "drops.yaml")
    message = str(exc.value)
    assert "1 invalid field(s)" in message
    assert "  - output.uri: 'runs/{{ ds }}': {{ ds }} is not available here; available: event_uri, event_dir, " \
           "event_name" in message


def test_an_asset_spec_takes_no_placeholders(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"output.uri: .*available: none"):
        parse_scheduled_spec(scheduled({"assets": ["s3://b/k"]}, output={"uri": "runs/{{ ds }}"}),
                             tmp_path / "downstream.yaml")


def test_template_syntax_in_a_spec_file_is_refused(tmp_path: Path) -> None:
    data = scheduled({"cron": "@daily"}, output={"uri": "runs/{{ ds.__class__ }}"})
    with pytest.raises(SpecError, match=r"  - output.uri: .*only placeholders like"):
        parse_scheduled_spec(data, tmp_path / "nightly.yaml")


@pytest.mark.parametrize(("data", "says"), [
    ({**BASE}, "no schedule section"),
    (["task", "text"], "must be a mapping, got list"),
    (scheduled(None), "set exactly one of schedule.cron"),
])
def test_not_a_scheduled_spec(tmp_path: Path, data: Any, says: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_scheduled_spec(data, tmp_path / "nightly.yaml")
    assert str(exc.value).startswith(f"{tmp_path / 'nightly.yaml'}: ") and says in str(exc.value)


def test_the_folder_gives_valid_specs_and_one_error_per_bad_file(tmp_path: Path) -> None:
    write_yaml(tmp_path / "b-nightly.yaml", scheduled({"cron": "@daily"}, output={"uri": "runs/{{ ds }}"}))
    write_yaml(tmp_path / "a-drops.yml", scheduled({"arrival": {"prefix": "in/"}}, input={"uri": "{{ event_uri }}"}))
    write_yaml(tmp_path / "bad-cron.yaml", scheduled({"cron": "every day"}))
    write_yaml(tmp_path / "Bad_Name.yaml", scheduled({"cron": "@daily"}))
    (tmp_path / "broken.yaml").write_text("schedule: {cron: '@daily'\ntask: [\n")
    write_yaml(tmp_path / "notes.json", scheduled({"cron": "@daily"}))  # not a spec suffix: ignored
    write_yaml(tmp_path / ".hidden.yaml", scheduled({"cron": "nope"}))  # hidden: ignored
    (tmp_path / "sub").mkdir()
    write_yaml(tmp_path / "sub" / "nested.yaml", scheduled({"cron": "nope"}))  # not recursive
    specs, errors = load_specs_folder(tmp_path)
    assert [s.name for s in specs] == ["a-drops", "b-nightly"]
    assert [s.schedule.kind for s in specs] == ["arrival", "cron"]
    assert sorted(p.name for p in errors) == ["Bad_Name.yaml", "bad-cron.yaml", "broken.yaml"]
    assert "schedule.cron: 'every day' is not a cron expression" in errors[tmp_path / "bad-cron.yaml"]
    assert "the file name 'Bad_Name.yaml'" in errors[tmp_path / "Bad_Name.yaml"]
    assert errors[tmp_path / "broken.yaml"].startswith(f"{tmp_path / 'broken.yaml'}: not valid YAML/JSON")


def test_a_missing_folder_has_no_specs(tmp_path: Path) -> None:
    assert load_specs_folder(tmp_path / "absent") == ([], {})


def test_the_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_yaml(tmp_path / "hourly.yaml", scheduled({"cron": "@hourly"}))
    monkeypatch.setenv("GENBATCH_SPECS_DIR", str(tmp_path))
    specs, errors = load_specs_folder()
    assert [s.name for s in specs] == ["hourly"] and errors == {}


# --------------------------------------------------------------------------- genbatch check-spec


def test_check_spec_prints_a_scheduled_spec_with_its_schedule(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "nightly.yaml", scheduled({"cron": "@daily", "timezone": "Europe/Berlin"},
                                                          output={"uri": "runs/{{ ds }}"}))
    assert main(["check-spec", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["schedule"]["cron"] == "@daily" and printed["schedule"]["timezone"] == "Europe/Berlin"
    assert printed["schedule"]["start_date"].startswith("2026-01-01T00:00:00")
    assert printed["output"]["uri"] == "runs/{{ ds }}" and printed["model"]["registry"] == ".genbatch/registry"
    assert "run_id" not in printed or printed["run_id"] is None


def test_check_spec_names_the_file_and_every_bad_field_of_a_scheduled_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path / "nightly.yaml", scheduled({"cron": "@weekdays"}, model={"nmae": "m"},
                                                          input={"uri": "{{ event_uri }}"}))
    assert main(["check-spec", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"genbatch: error: {path}: 3 invalid field(s):")
    for field in ("schedule.cron", "model.name", "model.nmae"):
        assert f"  - {field}: " in captured.err, field
    assert "Traceback" not in captured.err


def test_check_spec_still_checks_a_plain_run_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # check-spec lists the input (relative to here); the example registry is not checked
    (tmp_path / "in.jsonl").write_text('{"id": "a", "prompt": "p"}\n')
    path = write_yaml(tmp_path / "One Off.yaml", {**BASE})  # any file name: not a scheduled spec
    assert main(["check-spec", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "schedule" not in printed and printed["task"] == "text"
