"""Run ids and started_by records of scheduled runs, and the plan from watcher events to runs."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from genbatch.errors import SpecError
from genbatch.io import storage
from genbatch.schedule.arrivals import event_key
from genbatch.schedule.dispatch import plan_runs
from genbatch.schedule.runs import run_start
from genbatch.schedule.templating import render

BERLIN = ZoneInfo("Europe/Berlin")


def write_input(path: Path, text: str = '{"id": "a", "prompt": "p"}\n') -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(str(path), text, overwrite=True)
    return str(path)


def message(body: Any, channel: str = "genbatch-orders") -> dict[str, Any]:
    """An asset event's extra as the common-messaging watcher hands it (Redis pub/sub: data decoded to text)."""
    data = body if isinstance(body, str) else json.dumps(body)
    return {"from_trigger": True, "payload": {"type": "message", "pattern": None, "channel": channel, "data": data}}


# --------------------------------------------------------------------------- run_start: clock and assets


def test_a_cron_run_is_named_after_its_logical_date_in_utc() -> None:
    start = run_start("nightly", "cron", airflow_run_id="scheduled__2026-12-06T01:00:00+00:00",
                      logical_date=dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC),
                      data_interval_start=dt.datetime(2026, 12, 5, 1, 0, tzinfo=dt.UTC),
                      data_interval_end=dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.UTC))
    assert start.run_id == "nightly__20261206T010000"
    assert start.started_by == {
        "kind": "cron", "spec": "nightly", "airflow_run_id": "scheduled__2026-12-06T01:00:00+00:00",
        "logical_date": "2026-12-06T01:00:00+00:00",
        "data_interval": ["2026-12-05T01:00:00+00:00", "2026-12-06T01:00:00+00:00"],
    }
    assert render("runs/{{ ds }}/{{ data_interval_start | ds_nodash }}-{{ data_interval_end | hour }}", start.values,
                  where="output.uri") == "runs/2026-12-06/20261205-01"


def test_a_zoned_logical_date_and_interval_are_read_in_utc() -> None:
    """00:30 in Berlin on 6 Dec is 23:30 UTC on 5 Dec: the run id, ds and the interval fields all say UTC."""
    start = run_start("nightly", "cron", airflow_run_id="scheduled__x",
                      logical_date=dt.datetime(2026, 12, 6, 0, 30, tzinfo=BERLIN),
                      data_interval_start=dt.datetime(2026, 12, 5, 0, 30, tzinfo=BERLIN),
                      data_interval_end=dt.datetime(2026, 12, 6, 0, 30, tzinfo=BERLIN))
    assert start.run_id == "nightly__20261205T233000"
    assert render("{{ ds }}|{{ data_interval_start | ds }}|{{ data_interval_end | ds }}|{{ data_interval_end | hour }}",
                  start.values, where="output.uri") == "2026-12-05|2026-12-04|2026-12-05|23"
    assert start.started_by["logical_date"] == "2026-12-05T23:30:00+00:00"
    assert start.started_by["data_interval"] == ["2026-12-04T23:30:00+00:00", "2026-12-05T23:30:00+00:00"]


def test_a_naive_logical_date_is_utc() -> None:
    start = run_start("nightly", "cron", airflow_run_id="manual__x", logical_date=dt.datetime(2026, 12, 6, 2, 0))
    assert start.run_id == "nightly__20261206T020000"
    assert start.started_by["logical_date"] == "2026-12-06T02:00:00+00:00"
    assert start.started_by["data_interval"] == [None, None]


def test_the_same_interval_again_gets_the_same_run_id() -> None:
    """A cleared interval or a backfill over it lands in the same run dir (prepare resumes or refuses)."""
    def start(airflow_run_id: str) -> str:
        return run_start("nightly", "cron", airflow_run_id=airflow_run_id,
                         logical_date=dt.datetime(2026, 12, 6, 2, tzinfo=dt.UTC)).run_id

    assert start("scheduled__2026-12-06T02:00:00+00:00") == start("backfill__2026-12-06T02:00:00+00:00")


@pytest.mark.parametrize(("airflow_run_id", "run_id"), [
    ("asset_triggered__2026-12-06T01:00:00.123456+00:00", "downstream__asset_triggered__2026-12-06T01-00-00.123456-00-00"),
    ("manual__2026-12-06T01:00:00+00:00", "downstream__manual__2026-12-06T01-00-00-00-00"),
    ("my run/../../etc", "downstream__my-run-..-..-etc"),
])
def test_an_asset_or_manual_run_is_named_after_the_airflow_run(airflow_run_id: str, run_id: str) -> None:
    start = run_start("downstream", "assets", airflow_run_id=airflow_run_id)
    assert start.run_id == run_id
    assert "/" not in start.run_id
    assert start.values == {}
    assert start.started_by == {"kind": "assets", "spec": "downstream", "airflow_run_id": airflow_run_id}


# --------------------------------------------------------------------------- run_start: events


@pytest.mark.parametrize("kind", ["arrival", "queue"])
def test_an_event_run_is_named_after_the_input_version(kind: str) -> None:
    conf = {"event": {"uri": "gs://b/in/2026-12-06/batch.jsonl", "version": "1733450000123456",
                      "message_id": 42, "channel": "orders"}}
    start = run_start("drops", kind, airflow_run_id=f"{kind}__whatever", conf=conf)
    key = event_key("gs://b/in/2026-12-06/batch.jsonl", "1733450000123456")
    assert len(key) == 20 and start.run_id == f"drops__{key}"
    assert start.started_by == {"kind": kind, "spec": "drops", "airflow_run_id": f"{kind}__whatever",
                                "uri": "gs://b/in/2026-12-06/batch.jsonl", "version": "1733450000123456",
                                "key": key, "message_id": "42"}
    assert render("{{ event_dir }}|{{ event_name }}", start.values, where="input.uri") == \
        "gs://b/in/2026-12-06|batch.jsonl"


def test_another_version_of_the_same_input_is_another_run() -> None:
    def run_id(version: str) -> str:
        return run_start("drops", "arrival", airflow_run_id="x",
                         conf={"event": {"uri": "gs://b/in/a.jsonl", "version": version}}).run_id

    assert run_id("1") == run_id("1") != run_id("2")


def test_a_manual_run_with_only_a_uri_reads_the_input_version(tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in" / "a.jsonl")
    start = run_start("drops", "arrival", airflow_run_id="manual__x", conf={"event": {"uri": uri}})
    version = storage.version(uri)
    assert start.started_by["version"] == version and start.run_id == f"drops__{event_key(uri, version)}"
    assert "message_id" not in start.started_by
    # The run the watcher would start for this very file (with its version in conf) is the same run.
    assert run_start("drops", "arrival", airflow_run_id="arrival__k",
                     conf={"event": {"uri": uri, "version": version}}).run_id == start.run_id
    write_input(tmp_path / "in" / "a.jsonl", '{"id": "b", "prompt": "another"}\n')
    assert run_start("drops", "arrival", airflow_run_id="manual__y",
                     conf={"event": {"uri": uri}}).run_id != start.run_id, "rewritten: a new version"


@pytest.mark.parametrize("conf", [None, {}, {"event": None}, {"event": "gs://b/a.jsonl"}, {"event": {}},
                                  {"event": {"uri": ""}}, {"event": {"version": "1"}}, {"uri": "gs://b/a.jsonl"}])
def test_an_event_run_without_an_event_names_the_conf_it_needs(conf: dict[str, Any] | None) -> None:
    with pytest.raises(SpecError) as exc:
        run_start("drops", "queue", airflow_run_id="manual__x", conf=conf, dag_id="genbatch__drops")
    message = str(exc.value)
    assert message.startswith("genbatch__drops starts from an event")
    assert 'conf {"event": {"uri": "<input URI>"}}' in message and "genbatch__drops__events" in message


def test_a_manual_run_naming_a_missing_input_fails(tmp_path: Path) -> None:
    with pytest.raises(storage.ObjectNotFoundError, match="no such file"):
        run_start("drops", "arrival", airflow_run_id="manual__x", conf={"event": {"uri": str(tmp_path / "nope.jsonl")}})


# --------------------------------------------------------------------------- plan_runs: arrivals


def test_arrival_events_become_runs_named_after_their_key() -> None:
    extras = [{"from_trigger": True, "payload": {"uri": "gs://b/in/a.jsonl", "version": "7", "key": "ignored"}},
              {"from_trigger": True, "payload": {"uri": "gs://b/in/b.jsonl", "version": "8"}}]
    plan = plan_runs("arrival", extras)
    key_a, key_b = event_key("gs://b/in/a.jsonl", "7"), event_key("gs://b/in/b.jsonl", "8")
    assert plan.rejected == []
    assert plan.runs == [
        {"trigger_run_id": f"arrival__{key_a}", "conf": {"event": {"uri": "gs://b/in/a.jsonl", "version": "7",
                                                                    "key": key_a}}},
        {"trigger_run_id": f"arrival__{key_b}", "conf": {"event": {"uri": "gs://b/in/b.jsonl", "version": "8",
                                                                    "key": key_b}}},
    ]


def test_the_same_arrival_twice_in_one_wake_up_is_one_run_and_a_new_version_another() -> None:
    payloads = [{"uri": "gs://b/in/a.jsonl", "version": "7"}, {"uri": "gs://b/in/a.jsonl", "version": "7"},
                {"uri": "gs://b/in/a.jsonl", "version": "9"}]
    plan = plan_runs("arrival", [{"payload": p} for p in payloads])
    assert [r["conf"]["event"]["version"] for r in plan.runs] == ["7", "9"]
    assert len({r["trigger_run_id"] for r in plan.runs}) == 2


def test_an_arrival_event_without_its_fields_is_rejected_with_the_reason() -> None:
    plan = plan_runs("arrival", [{"payload": {"uri": "gs://b/in/a.jsonl"}}, {}, {"payload": {"version": "1"}},
                                 {"payload": {"uri": "gs://b/in/ok.jsonl", "version": "1"}}])
    assert [r["reason"] for r in plan.rejected] == ["missing field 'version'", "missing field 'uri'",
                                                    "missing field 'uri'"]
    assert [r["conf"]["event"]["uri"] for r in plan.runs] == ["gs://b/in/ok.jsonl"]


# --------------------------------------------------------------------------- plan_runs: queue messages


def test_a_good_message_starts_a_run_recording_its_id(tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in" / "orders.jsonl")
    plan = plan_runs("queue", [message({"input_uri": uri, "id": "msg-0001"})])
    version = storage.version(uri)
    key = event_key(uri, version)
    assert plan.rejected == []
    assert plan.runs == [{"trigger_run_id": f"queue__{key}", "conf": {"event": {
        "uri": uri, "version": version, "message_id": "msg-0001", "channel": "genbatch-orders", "key": key}}}]
    # ... and the run it starts is named after that input version, recording the message id.
    start = run_start("orders", "queue", airflow_run_id=plan.runs[0]["trigger_run_id"], conf=plan.runs[0]["conf"])
    assert start.run_id == f"orders__{key}" and start.started_by["message_id"] == "msg-0001"


def test_a_message_without_an_id_gets_a_hash_of_its_body(tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in" / "orders.jsonl")
    body = json.dumps({"input_uri": uri})
    [run] = plan_runs("queue", [message(body)]).runs
    message_id = run["conf"]["event"]["message_id"]
    assert len(message_id) == 16 and int(message_id, 16) >= 0
    [again] = plan_runs("queue", [message(body)]).runs
    assert again["conf"]["event"]["message_id"] == message_id, "the same body, the same id"
    [other] = plan_runs("queue", [message(json.dumps({"input_uri": uri, "note": "x"}))]).runs
    assert other["conf"]["event"]["message_id"] != message_id


def test_a_bytes_body_is_read_as_text(tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in" / "orders.jsonl")
    plan = plan_runs("queue", [{"payload": {"data": json.dumps({"input_uri": uri, "id": 5}).encode()}}])
    assert plan.rejected == [] and plan.runs[0]["conf"]["event"]["message_id"] == "5"


def test_a_redelivered_message_is_one_run_and_a_rewritten_input_a_new_one(tmp_path: Path) -> None:
    uri = write_input(tmp_path / "in" / "orders.jsonl")
    body = {"input_uri": uri, "id": "m-1"}
    plan = plan_runs("queue", [message(body), message(body), message({"input_uri": uri, "id": "m-2"})])
    assert len(plan.runs) == 1 and plan.rejected == []
    assert plan.runs[0]["conf"]["event"]["message_id"] == "m-1"
    first = plan.runs[0]["trigger_run_id"]
    assert plan_runs("queue", [message(body)]).runs[0]["trigger_run_id"] == first, "redelivered later: same run id"
    write_input(tmp_path / "in" / "orders.jsonl", '{"id": "b", "prompt": "new content"}\n')
    [rerun] = plan_runs("queue", [message(body)]).runs
    assert rerun["trigger_run_id"] != first and rerun["conf"]["event"]["version"] == storage.version(uri)


def test_bad_messages_are_rejected_with_reasons_while_good_ones_plan(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    allowed = tmp_path / "allowed"
    good = write_input(allowed / "good.jsonl")
    outside = write_input(tmp_path / "elsewhere" / "secret.jsonl")
    monkeypatch.setenv("GENBATCH_ALLOWED_PREFIXES", str(allowed))
    extras = [
        message("not json at all"),
        message({"id": "m-2"}),
        message({"input_uri": ""}),
        message(["a", "list"]),
        message({"input_uri": str(allowed / "missing.jsonl"), "id": "m-4"}),
        message({"input_uri": str(allowed / "{{ ds }}.jsonl")}),
        message({"input_uri": outside}),
        message({"input_uri": os.path.join(str(allowed), "..", "elsewhere", "secret.jsonl")}),
        {"payload": {"channel": "c"}},
        message({"input_uri": good, "id": "m-ok"}),
    ]
    plan = plan_runs("queue", extras)
    reasons = [r["reason"] for r in plan.rejected]
    assert len(reasons) == 9
    assert reasons[0].startswith("the message is not JSON (Expecting value at character 0)")
    assert reasons[1] == reasons[2] == reasons[3] == \
        'the message names no input: send {"input_uri": "gs://...", "id": "..."}'
    assert reasons[4] == f"input_uri {str(allowed / 'missing.jsonl')!r} does not exist; write the input before " \
                         "sending the message"
    assert reasons[5] == f"input_uri {str(allowed / '{{ ds }}.jsonl')!r} contains template syntax; send a plain URI"
    assert "outside the allowed prefixes" in reasons[6] and str(allowed) in reasons[6]
    assert "outside the allowed prefixes" in reasons[7]
    assert reasons[8] == "the message has no text body (got NoneType)"
    assert [r["event"] for r in plan.rejected][0]["data"] == "not json at all", "the event is kept for the log"
    assert [(r["conf"]["event"]["uri"], r["conf"]["event"]["message_id"]) for r in plan.runs] == [(good, "m-ok")]


def test_without_allowed_prefixes_any_existing_input_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENBATCH_ALLOWED_PREFIXES", raising=False)
    uri = write_input(tmp_path / "anywhere" / "x.jsonl")
    assert [r["conf"]["event"]["uri"] for r in plan_runs("queue", [message({"input_uri": uri})]).runs] == [uri]
