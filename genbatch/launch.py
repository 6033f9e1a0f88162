"""Start the worker as a local subprocess: the same command a Kubernetes pod runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any

from genbatch.errors import GenbatchError

log = logging.getLogger(__name__)


def worker_command(run_dir: str, shard: int, device: str = "cpu") -> list[str]:
    """The worker contract: identical arguments locally and in the container."""
    return ["genbatch", "worker", "--run-dir", run_dir, "--shard", str(shard), "--device", device]


def run_worker_process(run_dir: str, shard: int, device: str = "cpu", timeout_s: float | None = None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "genbatch", *worker_command(run_dir, shard, device)[1:]]
    log.info("shard %s: running %s", shard, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in proc.stderr.splitlines()[-40:]:
        log.info("worker[%s] %s", shard, line)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise GenbatchError(f"worker for shard {shard} exited with {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
