"""``make run-gcs KEEP=1``: the emulator outlives the run, its objects readable, until ``--stop``.

The run is a subprocess in a fresh directory (its own ``.genbatch/``), without the session
emulator's STORAGE_EMULATOR_HOST, so ``devstack.gcs_run --keep`` starts (and leaves) its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.gcs_emulator import GcsEmulator, server_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # two real runs, ~45 s each

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "kept-run"


def _tiny_spec(workdir: Path) -> Path:
    rows = (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:6]
    (workdir / "items.jsonl").write_text("\n".join(rows) + "\n")
    spec = {"task": "text", "input": {"uri": str(workdir / "items.jsonl")},
            "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
            "generation": {"max_new_tokens": 16}, "sharding": {"num_shards": 1}}
    path = workdir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _gcs_run(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    return subprocess.run([sys.executable, "-m", "devstack.gcs_run", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**base, "PYTHONPATH": str(REPO), **(env or {})})


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _read_success(host: str, bucket: str) -> Any:
    """The run's _SUCCESS marker, read with a plain client pointed at the printed emulator."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", host)
        client = storage.Client(project="look", credentials=AnonymousCredentials())
        return client.bucket(bucket).blob(f"runs/{RUN_ID}/_SUCCESS").download_as_bytes()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for both runs: its .genbatch/airflow DB is migrated once."""
    return tmp_path_factory.mktemp("gcs-run")


def test_keep_leaves_the_emulator_with_the_run_until_stop(workdir: Path) -> None:
    proc = _gcs_run(workdir, str(_tiny_spec(workdir)), "--keep", "--run-id", RUN_ID)
    found = re.search(r"^export STORAGE_EMULATOR_HOST=(\S+)$", proc.stdout, re.M)
    pid_match = re.search(r"\(or: kill (\d+)\)", proc.stdout)
    pid = int(pid_match.group(1)) if pid_match else None
    try:
        assert proc.returncode == 0 and found and pid, proc.stdout[-3000:] + proc.stderr[-3000:]
        host = found.group(1)
        assert f"bucket: gs://genbatch-runs\nrun: gs://genbatch-runs/runs/{RUN_ID}\n" in proc.stdout
        assert f"stop it (from {workdir}): {sys.executable} -m devstack.gcs_run --stop" in proc.stdout
        assert json.loads(_read_success(host, "genbatch-runs"))["run_id"] == RUN_ID  # read after the command exited
        stopped = _gcs_run(workdir, "--stop")
        assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not server_alive(pid) and not _answers(host)
        assert not (workdir / ".genbatch" / "gcs-emulator.json").exists()
    finally:
        if pid and server_alive(pid):  # the test failed before --stop: don't leave the server behind
            os.kill(pid, signal.SIGKILL)


def test_a_set_storage_emulator_host_is_used_and_nothing_is_started(workdir: Path, gcs_emulator: GcsEmulator) -> None:
    """The run publishes to the running emulator (its bucket created there), and leaves nothing kept."""
    proc = _gcs_run(workdir, str(_tiny_spec(workdir)), "--run-id", RUN_ID, "--bucket", "given-bucket",
                    env={"STORAGE_EMULATOR_HOST": gcs_emulator.url})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"using the emulator at STORAGE_EMULATOR_HOST={gcs_emulator.url}" in proc.stdout
    assert json.loads(_read_success(gcs_emulator.url, "given-bucket"))["run_id"] == RUN_ID
    assert "keeps running" not in proc.stdout and not (workdir / ".genbatch" / "gcs-emulator.json").exists()
