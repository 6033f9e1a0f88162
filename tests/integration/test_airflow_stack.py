"""The real local Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor; PostgreSQL).

One stack per module (``devstack.airflow_stack.running_stack``: its own throw-away PostgreSQL
cluster), driven only through the REST API as a user would:
- an operator triggers batch_generation with a small spec; it publishes a reconciling run;
- the publish Asset event triggers consumer_example, which reads the run through the manifest;
- a viewer gets 403 on trigger, an operator gets 403 on model_promotion (admin only);
- path traversal, another bucket, unknown fields and an oversized input fail before any work;
- canary secrets (a connection password, a secret-named env var, a param value) are counted in
  task logs, XComs, the run's outputs and its error files;
- examples/consumer/trigger_rest.py (apache-airflow-client only) triggers a run and waits for it
  (last: its publish triggers consumer_example once more).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.airflow_stack import REGISTRY, REPO_ROOT, Stack, running_stack
from tests.airflow_api import Api

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.airflow]

DAG = "batch_generation"
CONSUMER = "consumer_example"
RUN_ID = "rest-run"
RUN_TIMEOUT_S = 420
MAX_INPUT_BYTES = 65536
CANARIES = {
    "connection_password": f"gbconn{uuid.uuid4().hex}",
    "env_secret": f"gbenv{uuid.uuid4().hex}",
    "param": f"gbparam{uuid.uuid4().hex}",
}
BAD_ROWS = [{"id": "bad/slash", "prompt": "colour: red | material: wool | item: scarf\ndescription:"},
            {"id": "no-prompt"}]


def _size_limit_implemented() -> bool:
    from genbatch.run.spec import json_schema

    return "max_total_bytes" in json_schema()["properties"]["input"]["properties"]


SIZE_LIMIT_IMPLEMENTED = _size_limit_implemented()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow-stack")


@pytest.fixture(scope="module")
def stack(work: Path) -> Iterator[Stack]:
    env = {
        "GENBATCH_ALLOWED_PREFIXES": ",".join(str(p) for p in (work / "data", work / "runs", work / "bad-runs",
                                                                 REPO_ROOT / "examples", REGISTRY)),
        "GENBATCH_MAX_INPUT_BYTES": str(MAX_INPUT_BYTES),
        # canaries: a connection (its password), an env var named like a secret
        "AIRFLOW_CONN_GENBATCH_CANARY": json.dumps({"conn_type": "http", "host": "canary.invalid", "login": "u",
                                                    "password": CANARIES["connection_password"]}),
        "GENBATCH_API_TOKEN": CANARIES["env_secret"],
    }
    t0 = time.monotonic()
    with running_stack(work / "airflow", extra_env=env) as s:
        print(f"stack up in {time.monotonic() - t0:.0f} s at {s.url}")
        yield s
    print(f"stack module done in {time.monotonic() - t0:.0f} s")


@pytest.fixture(scope="module")
def api(stack: Stack) -> Api:
    api = Api(stack)
    for dag_id in (DAG, CONSUMER):
        resp = api.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        assert resp.status_code == 200, resp.text
    return api


def _spec(input_uri: str, output: str, run_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "text",
        "input": {"uri": input_uri},
        "model": {"name": "catalog-copy", "alias": "production", "registry": str(REGISTRY)},
        "generation": {"max_new_tokens": 24, "seed": 5},
        "sharding": {"num_shards": 2},
        "output": {"uri": output},
        "run_id": run_id,
    }
    spec.update(overrides or {})
    return spec


def _write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD_CASES: dict[str, tuple[dict[str, Any], str]] = {
    # name: (spec overrides relative to a good spec, what the prepare_run log must say)
    "traversal": ({"input": {"uri": str(REPO_ROOT.joinpath("examples", *[".."] * len(REPO_ROOT.parts), "etc", "passwd"))}},
                  r"'/etc/passwd' is outside the allowed prefixes"),
    "other_bucket": ({"output": {"uri": "gs://other-bucket/runs"}}, r"'gs://other-bucket/runs' is outside the allowed prefixes"),
    "unknown_field": ({"tenant_api_key": "x"}, r"tenant_api_key: unknown field"),
    "oversized": ({"input": {"uri": "OVERSIZED"}}, rf"is \d+ bytes, over the limit of {MAX_INPUT_BYTES} bytes"),
}


@pytest.fixture(scope="module")
def triggered(api: Api, work: Path) -> dict[str, str]:
    """Trigger the good run (as operator) and the bad ones at once, so they overlap; returns dag_run ids."""
    examples = [json.loads(x) for x in (REPO_ROOT / "examples/catalog/items.jsonl").read_text().splitlines()[:22]]
    good_input = _write_input(work / "data" / "input.jsonl", examples + BAD_ROWS)
    big = [{"id": f"big-{i}", "prompt": "colour: red | material: wool | item: scarf\ndescription: " + "x" * 200}
           for i in range(400)]
    big_input = _write_input(work / "data" / "big.jsonl", big)
    assert big_input.stat().st_size > MAX_INPUT_BYTES
    runs = {}
    # the param canary rides in a free-text field of the spec (a blocklist word), as a pasted secret would
    good = _spec(str(good_input), str(work / "runs"), RUN_ID, {"quality": {"blocklist": [CANARIES["param"]]}})
    resp = api.trigger(DAG, good, user="operator")
    assert resp.status_code == 200, resp.text
    runs["good"] = resp.json()["dag_run_id"]
    for name, (overrides, _) in BAD_CASES.items():
        spec = _spec(str(good_input), str(work / "bad-runs"), f"bad-{name}", overrides)
        if name == "oversized":
            if not SIZE_LIMIT_IMPLEMENTED:
                continue  # don't start a 400-row run that nothing would stop; the test reports it
            spec["input"]["uri"] = str(big_input)
        resp = api.trigger(DAG, spec, user="admin")
        assert resp.status_code == 200, resp.text
        runs[name] = resp.json()["dag_run_id"]
    return runs


@pytest.fixture(scope="module")
def good_run(api: Api, triggered: dict[str, str]) -> dict[str, Any]:
    t0 = time.monotonic()
    run = api.wait(DAG, triggered["good"])
    states = api.task_states(DAG, triggered["good"])
    assert run["state"] == "success", states
    print(f"batch_generation run succeeded {time.monotonic() - t0:.0f} s after the fixture began waiting")
    return run


def test_viewer_cannot_trigger_and_operator_cannot_promote(api: Api) -> None:
    resp = api.trigger(DAG, {}, user="viewer")
    assert resp.status_code == 403, resp.text
    assert api.call("PATCH", f"/dags/{DAG}", user="viewer", json={"is_paused": False}).status_code == 403
    assert api.call("GET", f"/dags/{DAG}/dagRuns", user="viewer").status_code == 200  # viewers read runs
    resp = api.trigger("model_promotion", {}, user="operator")
    assert resp.status_code == 403, resp.text  # promotion is the admin's


def test_operator_run_publishes_a_reconciling_run(api: Api, good_run: dict[str, Any], work: Path) -> None:
    assert good_run["triggering_user_name"] == "operator"
    root = work / "runs" / RUN_ID
    assert (root / "_SUCCESS").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["input"] == 24 and counts["rejected"] == 2
    assert counts["input"] == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["generated"] + counts["errored"]
    assert counts["items_lost"] == 0 and counts["items_duplicated"] == 0
    assert {s["shard"] for s in manifest["shards"]} == {0, 1}
    publish_xcom = api.call("GET", f"/dags/{DAG}/dagRuns/{good_run['dag_run_id']}/taskInstances/publish/xcomEntries/"
                            "return_value").json()["value"]
    assert publish_xcom == (root / "manifest.json").resolve().as_uri()  # absolute: readable from another machine


def test_publish_event_triggers_the_consumer(api: Api, good_run: dict[str, Any], work: Path) -> None:
    from genbatch.run.outputs import read

    root = work / "runs" / RUN_ID
    deadline = time.monotonic() + 240
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = api.call("GET", f"/dags/{CONSUMER}/dagRuns").json()["dag_runs"]
        if any(r["state"] in {"success", "failed"} for r in runs):
            break
        time.sleep(3)
    assert runs, "the publish Asset event did not trigger consumer_example"
    run = api.wait(CONSUMER, runs[0]["dag_run_id"], timeout_s=180)
    assert run["state"] == "success", api.task_states(CONSUMER, run["dag_run_id"])
    assert run["run_type"] == "asset_triggered"
    result = api.call("GET", f"/dags/{CONSUMER}/dagRuns/{run['dag_run_id']}/taskInstances/count_records/"
                      "xcomEntries/return_value").json()["value"]
    generated = json.loads((root / "manifest.json").read_text())["counts"]["generated"]
    assert result["runs"] == [{"run_uri": root.resolve().as_uri(), "run_id": RUN_ID, "records": generated}]
    assert sum(1 for _ in read(str(root))) == generated


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_params_fail_before_any_work(api: Api, stack: Stack, triggered: dict[str, str], work: Path,
                                         case: str) -> None:
    if case not in triggered:
        pytest.fail("no input size limit yet: RunSpec needs input.max_total_bytes and prepare_run must refuse an "
                    "input over min(input.max_total_bytes, GENBATCH_MAX_INPUT_BYTES) before any work "
                    "(see docs/operations.md)")
    run = api.wait(DAG, triggered[case], timeout_s=300)
    states = api.task_states(DAG, triggered[case])
    assert run["state"] == "failed", states
    assert states["prepare_run"] == "failed"
    assert all(v == "upstream_failed" for k, v in states.items() if k != "prepare_run"), states
    logs = list(stack.logs_dir.glob(f"dag_id={DAG}/run_id={triggered[case]}/task_id=prepare_run/attempt=*.log"))
    assert len(logs) == 1  # retries=0: refused once, not retried
    text = logs[0].read_text()
    assert re.search(BAD_CASES[case][1], text), text[-2000:]
    assert not (work / "bad-runs").exists()  # no run dir, nothing written anywhere under the output


def test_unknown_nested_field_is_refused_at_trigger_time(api: Api, work: Path) -> None:
    spec = _spec(str(REPO_ROOT / "examples/catalog/items.jsonl"), str(work / "bad-runs"), "bad-nested")
    spec["input"]["maxbytes"] = 1
    resp = api.trigger(DAG, spec, user="operator")
    assert resp.status_code == 400, resp.text  # the Param's JSON schema (additionalProperties: false)
    assert "'maxbytes' was unexpected" in resp.text


def _read_all(paths: Iterator[Path]) -> dict[str, str]:
    return {str(p): p.read_text(errors="replace") for p in paths if p.is_file()}


def test_canary_secrets_do_not_leak(api: Api, stack: Stack, good_run: dict[str, Any], work: Path) -> None:
    """Count every canary in every place a secret could end up.

    Besides the three planted canaries, the stack's own secrets (JWT secret, Fernet key, DB
    password: all in every component's environment) are counted too. A param value is not a
    secret channel: it is expected, by design, in the run record (spec.json) and in the DAG
    run's conf that the REST API and UI show to viewers; it must appear nowhere else.
    """
    root = work / "runs" / RUN_ID
    canaries = {**CANARIES, "jwt_secret": stack.secrets["jwt_secret"], "fernet_key": stack.secrets["fernet_key"],
                "db_password": stack.postgres.password}
    consumer_runs = api.call("GET", f"/dags/{CONSUMER}/dagRuns").json()["dag_runs"]
    places: dict[str, dict[str, str]] = {
        "task_logs": _read_all(stack.logs_dir.rglob("*")),
        "component_logs": _read_all(stack.component_logs_dir.rglob("*")),
        "xcoms": {"batch_generation": json.dumps(api.xcom_values(DAG, good_run["dag_run_id"])),
                  **{r["dag_run_id"]: json.dumps(api.xcom_values(CONSUMER, r["dag_run_id"])) for r in consumer_runs}},
        "outputs": _read_all((root / "outputs").rglob("*")),
        "errors": _read_all((root / "errors").rglob("*")),
        "run_record": _read_all(p for p in root.rglob("*") if not p.is_relative_to(root / "outputs")
                                and not p.is_relative_to(root / "errors")),
        "rest_dag_run_conf": {"viewer": api.call("GET", f"/dags/{DAG}/dagRuns/{good_run['dag_run_id']}",
                                                 user="viewer").text},
    }
    assert any("worker[" in t for t in places["task_logs"].values()) and places["outputs"] and places["errors"]
    hits = {(place, name): sorted(Path(k).name for k, text in files.items() if canary in text)
            for place, files in places.items() for name, canary in canaries.items()}
    print("canary hits:", json.dumps({f"{n}@{p}": v for (p, n), v in hits.items() if v}))
    expected = {("run_record", "param"): ["spec.json"], ("rest_dag_run_conf", "param"): ["viewer"]}
    leaks = {f"{name} in {place}: {files}": files for (place, name), files in hits.items()
             if files and expected.get((place, name)) != files}
    assert leaks == {}, f"secrets leaked: {sorted(leaks)}"
    assert all(hits[k] == v for k, v in expected.items())  # the by-design exposure is exactly that


def test_the_rest_client_example_triggers_a_run_and_waits_for_it(api: Api, stack: Stack, work: Path) -> None:
    """The docs' apache-airflow-client example, run as a consumer would, as the operator."""
    rows = [json.loads(x) for x in (REPO_ROOT / "examples/catalog/items.jsonl").read_text().splitlines()[:6]]
    spec = _spec(str(_write_input(work / "data" / "client.jsonl", rows)), str(work / "runs"), "client-run",
                 {"sharding": {"num_shards": 1}})
    spec_path = work / "client-spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "examples/consumer/trigger_rest.py"), stack.url, "operator",
                           str(spec_path)], env={**os.environ, "AIRFLOW_PASSWORD": stack.users["operator"]},
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = re.fullmatch(r"batch_generation (\S+): success\n", proc.stdout)
    assert found, proc.stdout
    run = api.run(DAG, found.group(1))
    assert run["state"] == "success" and run["triggering_user_name"] == "operator" and run["conf"] == spec
    assert (work / "runs" / "client-run" / "_SUCCESS").exists()
