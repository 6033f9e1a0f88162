"""The local backend: the worker as a subprocess, its exit codes mapped to retryable or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbatch.stages.generate import WorkerFailed, run_worker_process, worker_command


def test_worker_command_is_the_pod_command() -> None:
    assert worker_command("gs://b/runs/r1", 7) == ["genbatch", "worker", "--run-dir", "gs://b/runs/r1", "--shard", "7"]


def test_a_bad_run_dir_is_a_permanent_failure_with_the_workers_message(tmp_path: Path) -> None:
    with pytest.raises(WorkerFailed) as err:
        run_worker_process(str(tmp_path / "missing"), 0)
    assert err.value.exit_code == 2 and err.value.permanent
    assert "is not a prepared run directory" in str(err.value)


def test_the_worker_never_sees_airflow_secrets() -> None:
    from genbatch.stages.generate import worker_environment

    env = {
        "PATH": "/usr/bin", "HOME": "/home/a", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1",
        "GENBATCH_GCS_KMS_KEY": "projects/p/keyRings/r/cryptoKeys/k", "HF_HUB_OFFLINE": "1",
        "AIRFLOW_CONN_WAREHOUSE": "postgres://u:canary@h/db", "AIRFLOW__CORE__FERNET_KEY": "canary",
        "AIRFLOW__API_AUTH__JWT_SECRET": "canary", "GENBATCH_API_TOKEN": "canary", "HF_TOKEN": "canary",
        "AWS_SECRET_ACCESS_KEY": "canary",
    }
    passed = worker_environment(env)
    assert "canary" not in "".join(passed.values())
    assert set(passed) == {"PATH", "HOME", "STORAGE_EMULATOR_HOST", "GENBATCH_GCS_KMS_KEY", "HF_HUB_OFFLINE"}


def test_death_signal_only_from_the_main_thread() -> None:
    """PR_SET_PDEATHSIG fires when the forking *thread* ends: from a pool thread it would kill a
    healthy worker as soon as that thread finished, so the launcher does not set it there."""
    import os
    import threading

    from genbatch.stages.generate import _die_with

    assert callable(_die_with(os.getpid()))
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(_die_with(os.getpid())))
    thread.start()
    thread.join()
    assert seen == [None]
