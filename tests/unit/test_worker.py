"""The shard worker with a fake runner (a test double of our own runner seam, no model needed).

The real model path is exercised in tests/integration (real transformers/diffusers models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from models.runners import Item
from models.worker import run_shard
from tests.helpers import prepared_run, shard_item, write_shard


class Crash(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the worker can swallow it."""


class OutOfMemoryError(RuntimeError):
    """Same class name as torch.cuda.OutOfMemoryError: the worker classifies by name."""


class FakeRunner:
    """Echoes prompts; can crash after N batches, OOM above a batch size, or fail one prompt."""

    def __init__(self, crash_after: int | None = None, oom_above: int | None = None, poison: str | None = None):
        self.crash_after = crash_after
        self.oom_above = oom_above
        self.poison = poison
        self.batches: list[list[str]] = []

    def token_length(self, prompt: str) -> int:
        return len(prompt.split())

    def run_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        if self.oom_above is not None and len(items) > self.oom_above:
            raise OutOfMemoryError("CUDA out of memory (injected)")
        if self.poison is not None and any(i.prompt == self.poison for i in items):
            raise ValueError("poison prompt")
        if self.crash_after is not None and len(self.batches) >= self.crash_after:
            raise Crash()
        self.batches.append([i.id for i in items])
        return [{"output": f"echo {i.prompt} seed={i.seed}", "new_tokens": 3} for i in items]


def _outputs(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(root.rglob("part-*.jsonl")) for line in p.read_text().splitlines()]


def test_shard_runs_in_batches_and_commits_with_a_manifest(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), generation={"batch_size": 8})
    write_shard(state, 0, [shard_item(i, attributes={"colour": "red"}) for i in range(30)])
    runner = FakeRunner()
    manifest = run_shard(state.layout.root, 0, runner=runner)
    outs = _outputs(tmp_path)
    assert manifest["generated"] == 30 and manifest["errored"] == 0
    assert sorted(o["id"] for o in outs) == [f"item-{i:04d}" for i in range(30)]
    assert [len(b) for b in runner.batches] == [8, 8, 8, 6]
    first = next(o for o in outs if o["id"] == "item-0003")
    assert first["model_version"] == "fake@1" and first["seed"] == 3
    assert first["metadata"]["attributes"] == {"colour": "red"}
    assert first["params_hash"] == state.params_hash
    assert (Path(state.layout.shard_manifest(0))).exists()
    # A finished shard is a no-op the second time (an Airflow retry after success).
    again = FakeRunner()
    assert run_shard(state.layout.root, 0, runner=again)["generated"] == 30
    assert again.batches == []


def test_killed_worker_resumes_and_redoes_at_most_one_batch(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), generation={"batch_size": 5})
    write_shard(state, 0, [shard_item(i) for i in range(23)])
    with pytest.raises(Crash):
        run_shard(state.layout.root, 0, runner=FakeRunner(crash_after=2))
    committed_before = len(_outputs(tmp_path))
    assert committed_before == 10
    resumed = FakeRunner()
    manifest = run_shard(state.layout.root, 0, runner=resumed)
    ids = [o["id"] for o in _outputs(tmp_path)]
    assert len(ids) == len(set(ids)) == 23, "nothing lost, nothing doubled"
    assert sum(len(b) for b in resumed.batches) == 23 - committed_before
    assert manifest["resumed_items"] == 10


def test_out_of_memory_halves_the_batch_and_the_shard_still_completes(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), generation={"batch_size": 16})
    write_shard(state, 0, [shard_item(i) for i in range(40)])
    runner = FakeRunner(oom_above=4)
    manifest = run_shard(state.layout.root, 0, runner=runner)
    assert manifest["generated"] == 40 and manifest["oom_halvings"] >= 2
    assert max(len(b) for b in runner.batches) <= 4


def test_a_poison_item_fails_alone_into_the_errors_file(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), generation={"batch_size": 4}, quality={"max_error_rate": 0.2})
    items = [shard_item(i) for i in range(10)]
    items[6]["prompt"] = "POISON"
    write_shard(state, 0, items)
    manifest = run_shard(state.layout.root, 0, runner=FakeRunner(poison="POISON"))
    assert manifest["generated"] == 9 and manifest["errored"] == 1
    errors = [json.loads(x) for x in Path(state.layout.errors_file(0)).read_text().splitlines()]
    assert errors[0]["id"] == "item-0006" and "poison prompt" in errors[0]["error"]


def test_items_with_different_params_never_share_a_batch(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), generation={"batch_size": 8})
    items = [shard_item(i, params={"max_new_tokens": 5} if i % 2 else {}) for i in range(8)]
    write_shard(state, 0, items)
    runner = FakeRunner()
    run_shard(state.layout.root, 0, runner=runner)
    for batch in runner.batches:
        assert len({int(b.split("-")[1]) % 2 for b in batch}) == 1


def test_bad_shard_number_and_missing_shard_file_are_clear_errors(tmp_path: Path) -> None:
    from genbatch.errors import ShardInputError

    state = prepared_run(str(tmp_path), num_shards=2)
    with pytest.raises(ShardInputError, match="out of range"):
        run_shard(state.layout.root, 5, runner=FakeRunner())
    with pytest.raises(ShardInputError, match="run the preprocess stage first"):
        run_shard(state.layout.root, 1, runner=FakeRunner())


def test_too_many_errors_fail_the_shard_without_committing_it(tmp_path: Path) -> None:
    from models.worker import ShardFailed

    state = prepared_run(str(tmp_path), generation={"batch_size": 4}, quality={"max_error_rate": 0.1})
    items = [shard_item(i) for i in range(10)]
    for i in (1, 5):
        items[i]["prompt"] = "POISON"
    write_shard(state, 0, items)
    for _ in range(2):  # a retry resumes, finds the same errors, and fails the same way
        with pytest.raises(ShardFailed, match=r"2 of 10 items failed generation .*item-0001: ValueError: poison prompt"):
            run_shard(state.layout.root, 0, runner=FakeRunner(poison="POISON"))
    assert not Path(state.layout.shard_manifest(0)).exists()


def test_progress_lines_and_prometheus_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from models.metrics import metric_value

    monkeypatch.setenv("GENBATCH_PROGRESS_INTERVAL_S", "0")
    state = prepared_run(str(tmp_path), generation={"batch_size": 5})
    write_shard(state, 0, [shard_item(i) for i in range(20)])
    plan = Path(state.layout.shard_plan)
    plan.write_text(json.dumps({"shards": [{"shard": 0, "items": 20}]}))
    with caplog.at_level("INFO", logger="models.progress"):
        run_shard(state.layout.root, 0, runner=FakeRunner())
    lines = [r.getMessage() for r in caplog.records if r.name == "models.progress"]
    assert any("10/20 items (50%)" in line and "items/s" in line and "ETA" in line for line in lines)
    text = Path(state.layout.worker_metrics(0)).read_text()
    assert metric_value(text, "genbatch_items_total", status="generated", shard=0) == 20
    assert metric_value(text, "genbatch_generated_units_total") == 60  # 3 tokens per fake output
    assert metric_value(text, "genbatch_batch_latency_seconds_count") == 4
    assert metric_value(text, "genbatch_batch_size") == 5


def test_metrics_are_pushed_to_a_pushgateway_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A recording HTTP server on 127.0.0.1 stands in for Pushgateway (a Go server we cannot run here)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[str, str, bytes]] = []

    class Recorder(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("GENBATCH_PUSHGATEWAY", f"127.0.0.1:{server.server_port}")
        state = prepared_run(str(tmp_path), generation={"batch_size": 4})
        write_shard(state, 0, [shard_item(i) for i in range(6)])
        run_shard(state.layout.root, 0, runner=FakeRunner())
    finally:
        server.shutdown()
    assert len(received) == 1
    method, path, body = received[0]
    assert method == "PUT"
    assert path == "/metrics/job/genbatch_worker/rank/0/run_id/test-run/shard/0"
    assert b"genbatch_items_total" in body
