"""The local backend: the worker as a subprocess, its exit codes mapped to retryable or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbatch.launch import WorkerFailed, run_worker_process, worker_command


def test_worker_command_is_the_pod_command() -> None:
    assert worker_command("gs://b/runs/r1", 7) == ["genbatch", "worker", "--run-dir", "gs://b/runs/r1", "--shard", "7"]


def test_a_bad_run_dir_is_a_permanent_failure_with_the_workers_message(tmp_path: Path) -> None:
    with pytest.raises(WorkerFailed) as err:
        run_worker_process(str(tmp_path / "missing"), 0)
    assert err.value.exit_code == 2 and err.value.permanent
    assert "is not a prepared run directory" in str(err.value)
