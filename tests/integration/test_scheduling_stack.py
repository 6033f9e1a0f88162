"""Scheduled and event-started runs on the real local Airflow (api-server, scheduler, dag-processor, triggerer).

One stack with a specs folder (GENBATCH_SPECS_DIR) and a real Redis broker (Debian's redis-server):
- ``minutely`` (cron every minute, input templated by the tick) produces two runs with distinct inputs;
- clearing one of them re-runs it into the same run dir: nothing regenerated, nothing doubled;
- a backfill over three intervals gives three runs, each its own run dir;
- ``drops`` (arrival): an object dropped into the watched prefix starts exactly one run;
- ``inbox`` (queue): a message on the Redis channel starts one run, the same message again starts none;
- ``broken`` (invalid) is one import error naming the file and field while every other DAG loads (and is
  scheduled: Airflow marks the DAGs of a file with an import error stale).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.airflow_stack import REGISTRY, REPO_ROOT, Stack, free_port, running_stack
from tests.airflow_api import Api

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.airflow]

ROWS = [json.loads(x) for x in (REPO_ROOT / "examples/catalog/items.jsonl").read_text().splitlines()[:3]]
CHANNEL = "genbatch-inputs"
RUN_TIMEOUT_S = 420


def _write_rows(path: Path, tag: str) -> Path:
    """A small input whose ids say which interval or event it is for (atomically: temp, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps({**r, "id": f"{tag}-{r['id']}"}) + "\n" for r in ROWS))
    tmp.rename(path)
    return path


def _spec(schedule: dict[str, Any], input_uri: str, runs: Path) -> dict[str, Any]:
    return {"schedule": schedule, "task": "text", "input": {"uri": input_uri},
            "model": {"name": "catalog-copy", "alias": "production", "registry": str(REGISTRY)},
            "generation": {"max_new_tokens": 16, "seed": 3}, "sharding": {"num_shards": 1},
            "output": {"uri": str(runs)}}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scheduling")


@pytest.fixture(scope="module")
def redis_port(work: Path) -> Iterator[int]:
    """A real Redis broker on a free port, for the queue spec's MessageQueueTrigger."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def _tick(now: dt.datetime) -> dt.datetime:
    return now.replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def specs(work: Path) -> dict[str, Path]:
    """The specs folder: three good specs, one broken one; inputs for every minute around now."""
    folder, data, runs = work / "specs", work / "data", work / "runs"
    folder.mkdir()
    now = _tick(dt.datetime.now(dt.UTC))
    for minutes in range(-20, 40):  # the scheduled ticks ahead and the backfilled ones behind
        tick = now + dt.timedelta(minutes=minutes)
        _write_rows(data / "minutely" / f"{tick:%Y%m%dT%H%M%S}.jsonl", f"m{tick:%H%M}")
    (data / "drops").mkdir(parents=True)
    files = {
        # end_date bounds the clock (two to four ticks while the tests run); the DAG stays unpaused so that
        # a cleared run and the backfill run (a paused DAG runs nothing)
        "minutely": _spec({"cron": "* * * * *", "start_date": "2026-12-01T00:00:00Z", "catchup": False,
                           "max_active_runs": 1, "end_date": (now + dt.timedelta(minutes=4)).isoformat()},
                          str(data / "minutely") + "/{{ ts_nodash }}.jsonl", runs),
        "drops": _spec({"arrival": {"prefix": str(data / "drops"), "pattern": "*.jsonl", "poll_s": 2}},
                       "{{ event_uri }}", runs),
        "inbox": _spec({"queue": {"scheme": "redis+pubsub", "channels": [CHANNEL]}}, "{{ event_uri }}", runs),
    }
    paths = {}
    for name, spec in files.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(spec, sort_keys=False))
    broken = _spec({"cron": "*/5 * * *"}, str(data / "x.jsonl"), runs)
    broken["model"]["versoin"] = 2
    paths["broken"] = folder / "broken.yaml"
    paths["broken"].write_text(yaml.safe_dump(broken, sort_keys=False))
    return paths


@pytest.fixture(scope="module")
def stack(work: Path, specs: dict[str, Path], redis_port: int) -> Iterator[Stack]:
    env = {
        "GENBATCH_SPECS_DIR": str(work / "specs"),
        "GENBATCH_ALLOWED_PREFIXES": ",".join(str(p) for p in (work / "data", work / "runs", REPO_ROOT / "examples",
                                                                 REGISTRY)),
        "AIRFLOW_CONN_REDIS_DEFAULT": f"redis://127.0.0.1:{redis_port}?db=0",
    }
    t0 = time.monotonic()
    with running_stack(work / "airflow", extra_env=env) as s:
        print(f"stack up in {time.monotonic() - t0:.0f} s at {s.url}")
        yield s
    print(f"scheduling module done in {time.monotonic() - t0:.0f} s")


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    api = Api(stack)
    deadline = time.monotonic() + 180
    wanted = ["genbatch__minutely", "genbatch__drops", "genbatch__drops__events", "genbatch__inbox",
              "genbatch__inbox__events"]
    while True:
        missing = [d for d in wanted if api.call("GET", f"/dags/{d}").status_code != 200]
        if not missing:
            return api
        assert time.monotonic() < deadline, f"scheduled DAGs not parsed: {missing}"
        time.sleep(3)


def _wait_runs(api: Api, dag_id: str, count: int, *, timeout_s: float = RUN_TIMEOUT_S, **params: Any
               ) -> list[dict[str, Any]]:
    """Until ``count`` runs of ``dag_id`` (matching ``params``) have finished; fails on a failed one."""
    deadline = time.monotonic() + timeout_s
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = api.runs(dag_id, **params)
        failed = [r["dag_run_id"] for r in runs if r["state"] == "failed"]
        assert not failed, f"{dag_id}: failed runs {failed}: {[api.task_states(dag_id, f) for f in failed]}"
        done = [r for r in runs if r["state"] == "success"]
        if len(done) >= count:
            return done
        time.sleep(3)
    raise AssertionError(f"{dag_id}: {count} finished runs expected in {timeout_s} s, have "
                         f"{[(r['dag_run_id'], r['state']) for r in runs]}")


def _run_dir(work: Path, run_id: str) -> Path:
    return work / "runs" / run_id


def _published(work: Path, run_id: str) -> dict[str, Any]:
    """The run dir's spec.json and reconcile report; asserts it is published and reconciles."""
    run_dir = _run_dir(work, run_id)
    assert (run_dir / "_SUCCESS").is_file(), f"{run_dir} is not published"
    proc = subprocess.run([sys.executable, "-m", "genbatch", "reconcile", str(run_dir)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] is True, report
    return {"spec": json.loads((run_dir / "spec.json").read_text()), "reconcile": report}


def _fingerprint(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under the run dir: any regenerated or doubled item changes it."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_an_invalid_spec_is_one_import_error_naming_file_and_field(api: Api) -> None:
    errors = api.call("GET", "/importErrors").json()["import_errors"]
    assert len(errors) == 1, errors
    error = errors[0]
    assert error["filename"].endswith("scheduled_specs_errors.py"), error["filename"]
    assert "broken.yaml" in error["stack_trace"] and "schedule.cron" in error["stack_trace"]
    assert "model.versoin: unknown field" in error["stack_trace"]
    # every other DAG loaded: the repo's own and the three good specs'
    dags = {d["dag_id"]: d for d in api.call("GET", "/dags", params={"limit": 100}).json()["dags"]}
    assert not any(d["is_stale"] or d["has_import_errors"] for d in dags.values()), dags
    dag_ids = set(dags)
    assert {"batch_generation", "consumer_example", "genbatch__minutely", "genbatch__drops",
            "genbatch__inbox__events"} <= dag_ids
    assert not any(d.startswith("genbatch__broken") for d in dag_ids)


@pytest.fixture(scope="module")
def scheduled_runs(api: Api, work: Path) -> list[dict[str, Any]]:
    """Unpause the every-minute spec (its end_date stops it after a few ticks); its first two scheduled runs."""
    api.unpause("genbatch__minutely")
    runs = _wait_runs(api, "genbatch__minutely", 2, timeout_s=2 * RUN_TIMEOUT_S, run_type="scheduled")
    return runs[:2]


def test_a_cron_spec_runs_each_interval_on_its_own_input(work: Path, scheduled_runs: list[dict[str, Any]]) -> None:
    inputs = set()
    for run in scheduled_runs:
        logical = dt.datetime.fromisoformat(run["logical_date"])
        run_id = f"minutely__{logical:%Y%m%dT%H%M%S}"
        got = _published(work, run_id)
        expected_input = str(work / "data" / "minutely" / f"{logical:%Y%m%dT%H%M%S}.jsonl")
        assert got["spec"]["spec"]["input"]["uri"] == expected_input
        assert got["spec"]["started_by"]["kind"] == "cron"
        assert got["spec"]["started_by"]["logical_date"] == logical.isoformat()
        assert got["reconcile"]["generated"] == len(ROWS), got["reconcile"]
        ids = {json.loads(line)["id"] for p in (_run_dir(work, run_id) / "outputs").rglob("*.jsonl")
               for line in p.read_text().splitlines()}
        assert ids == {f"m{logical:%H%M}-{r['id']}" for r in ROWS}  # this interval's rows, nobody else's
        inputs.add(expected_input)
    assert len(inputs) == 2


def test_a_cleared_interval_reruns_into_the_same_run_dir(api: Api, work: Path,
                                                         scheduled_runs: list[dict[str, Any]]) -> None:
    first = scheduled_runs[0]
    run_id = f"minutely__{dt.datetime.fromisoformat(first['logical_date']):%Y%m%dT%H%M%S}"
    before = _fingerprint(_run_dir(work, run_id))
    resp = api.call("POST", f"/dags/genbatch__minutely/dagRuns/{first['dag_run_id']}/clear", json={"dry_run": False})
    assert resp.status_code == 200, resp.text
    time.sleep(5)
    done = api.wait("genbatch__minutely", first["dag_run_id"], timeout_s=RUN_TIMEOUT_S)
    assert done["state"] == "success"
    states = api.task_states("genbatch__minutely", first["dag_run_id"])
    assert states["prepare_run"] == "skipped", states  # the run dir is published with this spec: nothing to do
    assert _fingerprint(_run_dir(work, run_id)) == before  # not one file regenerated, rewritten or added
    report = _published(work, run_id)["reconcile"]
    figures = {k: report[k] for k in ("input", "generated", "items_lost", "items_duplicated", "work_redone")}
    print(f"cleared interval {run_id}: reconcile {json.dumps(figures)}, attempts {json.dumps(report['attempts'])}")
    assert figures == {"input": len(ROWS), "generated": len(ROWS), "items_lost": 0, "items_duplicated": 0,
                       "work_redone": 0}
    assert report["attempts"]["count"] == 1  # the shard's one attempt: the clear started no worker


def test_a_backfill_over_three_intervals_gives_three_runs(api: Api, work: Path,
                                                          scheduled_runs: list[dict[str, Any]]) -> None:
    first_tick = min(dt.datetime.fromisoformat(r["logical_date"]) for r in scheduled_runs)
    start, end = first_tick - dt.timedelta(minutes=8), first_tick - dt.timedelta(minutes=6)
    resp = api.call("POST", "/backfills", json={"dag_id": "genbatch__minutely", "from_date": start.isoformat(),
                                                 "to_date": end.isoformat(), "max_active_runs": 1})
    assert resp.status_code == 200, resp.text
    runs = _wait_runs(api, "genbatch__minutely", 3, timeout_s=3 * RUN_TIMEOUT_S, run_type="backfill")
    assert len(runs) == 3, runs
    ticks = sorted(dt.datetime.fromisoformat(r["logical_date"]) for r in runs)
    assert ticks == [start, start + dt.timedelta(minutes=1), end]
    for tick in ticks:
        got = _published(work, f"minutely__{tick:%Y%m%dT%H%M%S}")
        assert got["spec"]["spec"]["input"]["uri"].endswith(f"{tick:%Y%m%dT%H%M%S}.jsonl")


def test_an_object_dropped_in_the_watched_prefix_starts_exactly_one_run(api: Api, work: Path) -> None:
    api.unpause("genbatch__drops")
    api.unpause("genbatch__drops__events")
    dropped = _write_rows(work / "data" / "drops" / "batch-1.jsonl", "drop1")
    runs = _wait_runs(api, "genbatch__drops", 1)
    time.sleep(20)  # ten more polls of the watcher: the same object version must not start another run
    runs = api.runs("genbatch__drops")
    assert [r["state"] for r in runs] == ["success"], runs
    # the trigger itself fired once: it remembered the object (the Asset's state store), so the events DAG ran once
    assert len(api.runs("genbatch__drops__events")) == 1
    started = _published(work, runs[0]["dag_run_id"].replace("arrival__", "drops__"))["spec"]["started_by"]
    assert started["kind"] == "arrival" and started["uri"] == str(dropped)


def _subscribers(port: int) -> int:
    import redis

    return int(dict(redis.Redis(port=port).pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0))


def _publish_when_subscribed(port: int, message: dict[str, Any], timeout_s: float = 120) -> None:
    """Publish once the watcher listens (Redis pub/sub keeps nothing for absent subscribers)."""
    import redis

    deadline = time.monotonic() + timeout_s
    while _subscribers(port) == 0:
        assert time.monotonic() < deadline, f"no subscriber on {CHANNEL} after {timeout_s} s"
        time.sleep(0.5)
    assert redis.Redis(port=port).publish(CHANNEL, json.dumps(message)) >= 1


def test_a_queue_message_starts_one_run_and_its_repeat_none(api: Api, work: Path, redis_port: int) -> None:
    api.unpause("genbatch__inbox")
    api.unpause("genbatch__inbox__events")
    target = _write_rows(work / "data" / "inbox" / "request-1.jsonl", "msg1")
    message = {"input_uri": str(target), "id": "msg-0001"}
    _publish_when_subscribed(redis_port, message)
    runs = _wait_runs(api, "genbatch__inbox", 1)
    got = _published(work, runs[0]["dag_run_id"].replace("queue__", "inbox__"))
    assert got["spec"]["started_by"]["message_id"] == "msg-0001"
    assert got["spec"]["started_by"]["uri"] == str(target)
    # the same message again (a redelivery): the events DAG runs, and starts nothing
    _publish_when_subscribed(redis_port, message)
    events = _wait_runs(api, "genbatch__inbox__events", 2)
    second = events[-1]["dag_run_id"]
    assert api.task_states("genbatch__inbox__events", second).get("start_runs[0]") == "skipped"
    time.sleep(5)
    assert [r["state"] for r in api.runs("genbatch__inbox")] == ["success"]
