"""Start the worker as a local subprocess: the same command a Kubernetes pod runs.

One function (``worker_command``) builds the command for both backends, so a pod and a
local process for the same shard run exactly the same thing.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

from genbatch.errors import GenbatchError

log = logging.getLogger(__name__)

# The worker exits 2 on a GenbatchError (bad input, integrity, too many item errors):
# retrying cannot help. Any other non-zero code (killed, OOM-killed, crash) is retryable.
EXIT_PERMANENT = 2


class WorkerFailed(GenbatchError):
    """The worker process exited non-zero; ``permanent`` says whether a retry can help."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.permanent = exit_code == EXIT_PERMANENT


def worker_command(run_dir: str, shard: int) -> list[str]:
    """The worker contract: identical arguments locally and in the container."""
    return ["genbatch", "worker", "--run-dir", run_dir, "--shard", str(shard)]


# What the worker may see of the task's environment: it runs model code, so never Airflow's
# connections, DB URL, JWT secret or Fernet key (a pod likewise gets only declared variables).
_PASS_PREFIXES = ("GENBATCH_", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
                  "HF_", "TRANSFORMERS_", "CUDA_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_",
                  "LC_", "PYTHON")
_PASS_NAMES = {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "VIRTUAL_ENV", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIALS_JSON", "API_KEY")


def worker_environment(env: dict[str, str]) -> dict[str, str]:
    """The allow-listed part of ``env``; secret-looking names are dropped even under allowed prefixes."""
    def allowed(name: str) -> bool:
        upper = name.upper()
        if any(word in upper for word in _SECRET_WORDS):
            return False
        return upper in _PASS_NAMES or upper.startswith(_PASS_PREFIXES)

    return {k: v for k, v in env.items() if allowed(k)}


def run_worker_process(run_dir: str, shard: int, timeout_s: float | None = None) -> dict[str, Any]:
    """Run the worker, streaming its log lines into our log as they come."""
    cmd = [sys.executable, "-m", "genbatch", *worker_command(run_dir, shard)[1:]]
    log.info("shard %s: running %s", shard, " ".join(cmd))
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=worker_environment(dict(os.environ))) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log.info("worker[%s] %s", shard, line)
            tail = [*tail[-19:], line]
        code = proc.wait(timeout=timeout_s)
    if code != 0:
        reason = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        detail = "\n".join(tail[-5:])
        raise WorkerFailed(f"worker for shard {shard} {reason}: {detail}", exit_code=code)
    result: dict[str, Any] = json.loads(tail[-1])
    return result
