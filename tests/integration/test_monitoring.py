"""Monitoring and alerts, with real parts: a real worker process writing JSON logs and its metrics
file, Airflow's own metric registry and source, the statsd_exporter mapping semantics
(tests/monitoring_support.py), and a real failing ``dag.test()`` run of batch_generation that posts
its alert to a local HTTP server and sends its StatsD metrics to a local UDP socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.airflow_stack import statsd_env
from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState, write_run_state
from models.registry import resolve
from models.zoo.seed import ensure_zoo_registered
from tests.monitoring_support import (
    MAPPING,
    STATSD_TYPES,
    StatsdMapper,
    airflow_source_text,
    airflow_statsd_names,
    dashboard_exprs,
    dashboard_problems,
    literal_in_source,
    load_dashboard,
    prom_file_series,
    promql_usage,
)
from tests.worker_harness import catalog_prompts, worker_cmd, worker_env, write_items

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CANARY = "canary-5ecret-7f3a91c2"  # the value of a secret-looking env var; must never be printed
N_ITEMS = 10


@dataclass
class WorkerRun:
    run_id: str
    ids: list[str]
    bad_id: str
    returncode: int
    stdout: str
    stderr: str
    metrics_text: str


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory: pytest.TempPathFactory) -> WorkerRun:
    """One real `genbatch worker` process on a tiny real model, with GENBATCH_LOG_FORMAT=json."""
    tmp = tmp_path_factory.mktemp("monitoring-worker")
    registry = str(tmp / "registry")
    ensure_zoo_registered(registry)
    mv = resolve(registry, "catalog-copy", alias="production")
    spec = parse_spec({"task": "text", "input": {"uri": "unused.jsonl"},
                       "model": {"name": mv.name, "version": mv.version, "registry": registry},
                       "generation": {"batch_size": 4, "max_new_tokens": 4}, "quality": {"max_error_rate": 0.5},
                       "sharding": {"num_shards": 1}, "output": {"uri": str(tmp / "out")}})
    state = RunState(run_id="mon-run", spec=spec, model=mv, layout=RunLayout.for_run(str(tmp / "out"), "mon-run"),
                     num_shards=1)
    write_run_state(state)
    prompts = catalog_prompts()
    ids = [f"item-{i:03d}" for i in range(N_ITEMS - 2)] + [f"item-{CANARY}", "item-bad"]
    items = [{"id": ids[i], "prompt": prompts[i % len(prompts)], "seed": i, "params": {}, "row_index": i}
             for i in range(N_ITEMS)]
    items[-1]["params"] = {"max_new_tokens": "many"}  # got past preprocess somehow: fails generation, alone
    write_items(state, items)
    env = {**worker_env(), "GENBATCH_LOG_FORMAT": "json", "MONITORING_TEST_SECRET": CANARY}
    proc = subprocess.run(worker_cmd(state.layout.root), env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    metrics = storage.read_bytes(state.layout.worker_metrics(0, 0)).decode()
    return WorkerRun("mon-run", ids, "item-bad", proc.returncode, proc.stdout, proc.stderr, metrics)


# --------------------------------------------------------------------------- structured logs


def test_worker_logs_one_json_object_per_line_with_run_shard_and_item_ids(worker_run: WorkerRun) -> None:
    assert worker_run.returncode == 0, worker_run.stderr[-3000:]
    lines = [line for line in worker_run.stderr.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    records = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert record["run_id"] == worker_run.run_id and record["shard"] == 0, record
        assert {"timestamp", "severity", "logger", "message"} <= set(record), record
        records.append(record)
    commits = [r for r in records if r["message"].startswith("shard 0 rank 0: committed part")]
    errors = [r for r in records if "items failed generation" in r["message"]]
    committed = [i for r in commits for i in r["item_ids"]]
    failed = [i for r in errors for i in r["item_ids"]]
    assert failed == [worker_run.bad_id] and all(r["severity"] == "WARNING" for r in errors)
    # every item is named exactly once, on the line of the batch that committed it (or failed it);
    # the id holding the secret value is there with the value redacted
    expected = sorted(i.replace(CANARY, "***") for i in worker_run.ids if i != worker_run.bad_id)
    assert sorted(committed) == expected
    assert [r["part"] for r in commits] == sorted(r["part"] for r in commits)
    assert CANARY not in worker_run.stderr and CANARY not in worker_run.stdout
    # the last stdout line is still the worker's JSON result (genbatch.stages.generate reads it)
    assert json.loads(worker_run.stdout.strip().splitlines()[-1])["errored"] == 1


# --------------------------------------------------------------------------- dashboard and mapping


def _known_series(worker_run: WorkerRun) -> dict[str, set[str]]:
    """Every series name the code emits -> its labels: the real worker's metrics file, plus what
    the statsd mapping makes of every metric name in Airflow's registry."""
    known = prom_file_series(worker_run.metrics_text)
    mapper = StatsdMapper.load()
    for name, mtype, _ in airflow_statsd_names():
        mapped = mapper.map(name, mtype)
        if mapped is not None:
            for series, labels in mapped.series().items():
                known.setdefault(series, set()).update(labels)
    return known


def test_dashboard_uses_only_metric_names_the_code_emits(worker_run: WorkerRun) -> None:
    dashboard = load_dashboard()
    known = _known_series(worker_run)
    assert dashboard_problems(dashboard, known) == []
    used = set().union(*(promql_usage(e).metrics for e in dashboard_exprs(dashboard)))
    worker_names = set(prom_file_series(worker_run.metrics_text))
    # both halves are on the dashboard, and every worker metric is shown somewhere
    assert {n for n in used if n.startswith("airflow_")} and used & worker_names
    families = {n.removesuffix(s) for n in worker_names for s in ("_bucket", "_sum", "_count", "_total", "_created")
                if n.endswith(s)} | worker_names
    shown = {f for f in families if any(u.startswith(f) for u in used)}
    assert {"genbatch_items", "genbatch_generated_units", "genbatch_batch_latency_seconds", "genbatch_batch_size",
            "genbatch_device_memory_peak_bytes", "genbatch_last_batch_timestamp_seconds"} <= shown


@pytest.mark.parametrize("old,new,expected", [
    ("genbatch_items_total", "genbatch_item_total", "'genbatch_item_total' is not emitted"),  # worker metric typo
    ("airflow_ti_finish_total", "airflow_ti_finished_total", "'airflow_ti_finished_total' is not emitted"),
    ('state=\\"failed\\"', 'status=\\"failed\\"', "has no label 'status'"),  # a label the metric lacks
    ("by (le, task_id)", "by (le, task)", "grouping label 'task'"),  # a grouping label nothing has
])
def test_the_dashboard_check_fails_on_a_typo(worker_run: WorkerRun, old: str, new: str, expected: str) -> None:
    text = json.dumps(load_dashboard())
    assert old in text
    problems = dashboard_problems(json.loads(text.replace(old, new)), _known_series(worker_run))
    assert any(expected in p for p in problems), problems


def test_every_mapping_rule_maps_metrics_airflow_really_emits() -> None:
    mapper = StatsdMapper.load()  # also validates the file as statsd_exporter does at start-up
    source = airflow_source_text()
    hits: dict[int, set[str]] = {}
    for name, mtype, registry_name in airflow_statsd_names():
        found = mapper.lookup(name, mtype)
        if found is not None:
            hits.setdefault(found[0].index, set()).add(registry_name)
    dead = [r.match for r in mapper.rules if r.index not in hits]
    assert dead == [], f"rules matching no metric of Airflow's registry: {dead}"
    not_in_source = sorted({n for names in hits.values() for n in names if not literal_in_source(n, source)})
    assert not_in_source == [], f"registry names not found in Airflow's source: {not_in_source}"
    assert not literal_in_source("ti.finishd", source) and not literal_in_source("dagrun.duraton.success", source)
    # timers are histograms whatever the exporter's defaults (the dashboard uses _bucket)
    assert all(r.observer_type == "histogram" for r in mapper.rules if r.metric_type == "observer")


def test_helm_values_carry_the_same_mapping_and_statsd_settings() -> None:
    values = yaml.safe_load((REPO / "docker" / "helm" / "airflow-values.yaml").read_text())
    assert values["statsd"]["enabled"] is True
    assert values["statsd"]["overrideMappings"] == yaml.safe_load(MAPPING.read_text())["mappings"]
    metrics = values["config"]["metrics"]
    assert metrics["statsd_on"] is True and metrics["statsd_prefix"] == "airflow" and metrics["legacy_names_on"] is True


# --------------------------------------------------------------------------- alert + StatsD from a real failing run

PROBE = r"""
import json, sys
from pathlib import Path
from genbatch.cli import embedded
home = Path(sys.argv[1])
embedded.configure(home)
embedded.ensure_db(home)
state, tasks = embedded.run_dag(json.loads(sys.argv[2]))
print(json.dumps({"state": state, "tasks": tasks}))
"""


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "content_type": self.headers["Content-Type"],
                                    "body": body.decode()})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Webhook", (_Webhook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/T000/B000/hook-token-91ab", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def statsd_listener() -> Iterator[tuple[int, list[str]]]:
    lines: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                lines.extend(sock.recv(65535).decode().splitlines())
            except TimeoutError:
                continue

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1]), lines
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


@pytest.mark.slow
def test_a_failed_task_posts_its_alert_and_its_statsd_metrics_map_to_the_dashboard(
        tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]], statsd_listener: tuple[int, list[str]]) -> None:
    url, received = webhook
    port, lines = statsd_listener
    secret_dir = tmp_path / CANARY  # the failure message names the input path, secret value included
    conf = {"task": "text", "input": {"uri": str(secret_dir / "missing.jsonl")},
            "model": {"name": "catalog-copy", "alias": "production", "registry": str(tmp_path / "registry")},
            "output": {"uri": str(tmp_path / "out")}}
    env = {**os.environ, "AIRFLOW_VAR_GENBATCH_ALERT_WEBHOOK": url, "MONITORING_TEST_SECRET": CANARY,
           **statsd_env(f"127.0.0.1:{port}")}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "airflow"), json.dumps(conf)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["state"].endswith("failed") and result["tasks"]["prepare_run"] == "failed", result

    # exactly one alert (prepare_run has no retries; the tasks after it never ran), Slack-compatible
    assert len(received) == 1, received
    assert received[0]["path"] == "/services/T000/B000/hook-token-91ab"
    assert received[0]["content_type"] == "application/json"
    alert = json.loads(received[0]["body"])
    assert alert["dag_id"] == "batch_generation" and alert["task_id"] == "prepare_run"
    assert alert["run_id"].startswith("manual__") and alert["try_number"] == 1 and alert["map_index"] == -1
    assert alert["exception"].startswith("ShardInputError: input ") and "does not exist" in alert["exception"]
    assert alert["log_url"].endswith("/dags/batch_generation/runs/" + alert["log_url"].split("/runs/")[1])
    assert "/tasks/prepare_run" in alert["log_url"]
    assert "batch_generation.prepare_run" in alert["text"] and alert["exception"] in alert["text"]
    # no secret in the alert, and the webhook URL (its token) in no log line
    assert CANARY not in received[0]["body"] and "***" in alert["exception"]
    assert "hook-token-91ab" not in output

    # Airflow really sent StatsD metrics; through the mapping they are series the dashboard uses
    time.sleep(0.5)
    mapper = StatsdMapper.load()
    series: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for line in lines:
        name, _, rest = line.partition(":")
        mtype = STATSD_TYPES[rest.split("|")[1]]
        mapped = mapper.map(name, mtype)
        if mapped is not None:
            for s in mapped.series():
                series.setdefault(s, set()).add(mapped.labels)
    failed = (("dag_id", "batch_generation"), ("state", "failed"), ("task_id", "prepare_run"))
    assert failed in series.get("airflow_ti_finish_total", set()), (lines, series)
    assert (("dag_id", "batch_generation"), ("task_id", "prepare_run")) in series["airflow_task_duration_seconds_bucket"]
    assert (("operator", "PrepareRunOperator"),) in series["airflow_operator_failures_total"]
    used = set().union(*(promql_usage(e).metrics for e in dashboard_exprs(load_dashboard())))
    assert {"airflow_ti_finish_total", "airflow_task_duration_seconds_bucket", "airflow_operator_failures_total"} <= used
    # and what Airflow sent is what the registry-based check assumes it sends
    registry = {(n, t) for n, t, _ in airflow_statsd_names()}
    sent = {(line.partition(":")[0], STATSD_TYPES[line.split("|")[1]]) for line in lines}
    task_level = {s for s in sent if ".prepare_run" in s[0] or s[0].startswith("airflow.operator_")}
    assert task_level and all(
        (n.replace("prepare_run", "generate_local").replace("PrepareRunOperator", "LocalShardOperator"), t) in registry
        for n, t in task_level), task_level
