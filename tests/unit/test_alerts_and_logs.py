"""genbatch.ops.alerts (posting never raises, never waits long, never carries a secret), genbatch.ops.logs
(JSON lines, redaction) and the local stack's StatsD settings, against real sockets."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from devstack.airflow_stack import StackError, statsd_env
from genbatch.ops import alerts, logs

SECRET = "s3cr3t-value-for-tests"


def _alert(exception: str = "ValueError: boom") -> alerts.FailureAlert:
    return alerts.FailureAlert(dag_id="batch_generation", run_id="manual__1", task_id="generate_local", map_index=3,
                               try_number=2, exception=exception, log_url="http://airflow/dags/x")


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A real HTTP server on 127.0.0.1 answering with the status in ``status[0]``."""
    bodies: list[bytes] = []
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/hook/TOKEN123", bodies, status
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_payload_is_slack_compatible_and_complete(server: tuple[str, list[bytes], list[int]]) -> None:
    url, bodies, _ = server
    assert alerts.send(url, _alert()) == 200
    payload = json.loads(bodies[0])
    assert payload["text"].startswith(":red_circle: *batch_generation.generate_local[3]* failed")
    assert {k: payload[k] for k in ("dag_id", "run_id", "task_id", "map_index", "try_number", "log_url")} == {
        "dag_id": "batch_generation", "run_id": "manual__1", "task_id": "generate_local", "map_index": 3,
        "try_number": 2, "log_url": "http://airflow/dags/x"}
    assert alerts.send(None, _alert()) is None and len(bodies) == 1  # no webhook configured: nothing sent


def test_an_error_answer_or_a_dead_webhook_never_raises_and_never_logs_the_url(
        server: tuple[str, list[bytes], list[int]], caplog: pytest.LogCaptureFixture) -> None:
    url, _, status = server
    status[0] = 500
    with caplog.at_level(logging.INFO, logger="genbatch.ops.alerts"):
        assert alerts.post(url, {"text": "x"}) == 500
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        assert alerts.post(f"http://127.0.0.1:{closed}/hook/TOKEN123", {"text": "x"}) is None
        assert alerts.post("file:///etc/passwd", {"text": "x"}) is None
    assert "TOKEN123" not in caplog.text and "127.0.0.1" in caplog.text


def test_a_webhook_that_never_answers_costs_only_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        t0 = time.monotonic()
        assert alerts.post(f"http://127.0.0.1:{listener.getsockname()[1]}/h", {"text": "x"}, timeout_s=0.5) is None
        assert time.monotonic() - t0 < 3
    finally:
        listener.close()


def test_the_exception_summary_is_short_and_has_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_API_TOKEN", SECRET)
    summary = alerts.summarise_exception(RuntimeError(f"could not reach db with {SECRET} " + "x" * 5000))
    assert summary.startswith("RuntimeError: could not reach db with *** ")
    assert SECRET not in summary and len(summary) <= alerts.MAX_EXCEPTION_CHARS


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in handlers:
            root.addHandler(h)
        root.setLevel(level)
        logs.clear()


def test_json_lines_carry_context_extras_and_no_secret(monkeypatch: pytest.MonkeyPatch,
                                                       restore_root_logging: None) -> None:
    monkeypatch.setenv("GENBATCH_DB_PASSWORD", SECRET)
    stream = io.StringIO()
    logs.configure(fmt="json", stream=stream, force=True)
    logs.bind(run_id="r-1", shard=2)
    log = logging.getLogger("models.worker")
    log.info("committed part %s (%s)", 7, SECRET, extra={"item_ids": ["a", SECRET], "part": 7})
    try:
        raise ValueError(SECRET)
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first)[:6] == ["timestamp", "severity", "logger", "message", "run_id", "shard"]
    assert first["message"] == "committed part 7 (***)" and first["item_ids"] == ["a", "***"] and first["part"] == 7
    assert (first["severity"], first["run_id"], first["shard"]) == ("INFO", "r-1", 2)
    assert second["severity"] == "ERROR" and "ValueError: ***" in second["exception"]
    assert SECRET not in stream.getvalue()


def test_text_lines_are_redacted_too_and_a_bad_format_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                                  restore_root_logging: None) -> None:
    monkeypatch.setenv("X_SECRET", SECRET)
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    stream = io.StringIO()
    logs.configure(stream=stream, force=True)
    logging.getLogger("genbatch.cli.commands").warning("value %s", SECRET)
    text = stream.getvalue()
    assert "is not a log format" in text and "WARNING genbatch.cli.commands: value ***" in text and SECRET not in text


def test_statsd_settings_for_the_local_stack() -> None:
    assert statsd_env(None) == {} and statsd_env("") == {}
    env = statsd_env("127.0.0.1:9125")
    assert env["AIRFLOW__METRICS__STATSD_ON"] == "True" and env["AIRFLOW__METRICS__STATSD_PORT"] == "9125"
    assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow" and env["AIRFLOW__METRICS__LEGACY_NAMES_ON"] == "True"
    with pytest.raises(StackError, match="not HOST:PORT"):
        statsd_env("localhost")
