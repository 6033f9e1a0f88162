"""The Python side of the ENOSPC injector (``enospc.c``): build it, arm it, read its log, and a worker to run under it.

LD_PRELOAD takes effect only when a process starts, so the failing attempt is its own process:
``python -m tests.faults.enospc RUN_DIR OUT_JSON`` runs the real ``genbatch worker`` command line
with the deterministic :class:`~tests.faults._support.EchoRunner` in place of the model load, and
writes the runner's calls and the StorageError it raised (if any) to OUT_JSON for the test to check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("enospc.c")
DIR_ENV, BYTES_ENV, LOG_ENV = "GENBATCH_ENOSPC_DIR", "GENBATCH_ENOSPC_BYTES", "GENBATCH_ENOSPC_LOG"


class NoCompiler(RuntimeError):
    """No C compiler on PATH: the shim cannot be built (and the disk-full test must not pass without it)."""


def build_shim(out_dir: Path) -> Path:
    """Compile ``enospc.c`` into ``out_dir/libenospc.so``; raises NoCompiler or CalledProcessError."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise NoCompiler("no C compiler (cc/gcc) on PATH; install gcc (apt-get install gcc) to build the "
                         f"ENOSPC injector {SOURCE}")
    lib = out_dir / "libenospc.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(lib), str(SOURCE), "-ldl"], check=True,
                   capture_output=True, text=True)
    return lib


def armed_env(base: dict[str, str], lib: Path, limited_dir: str, budget: int, log: Path) -> dict[str, str]:
    """``base`` plus the shim: the process's writes under ``limited_dir`` run out after ``budget`` bytes."""
    env = dict(base)
    env["LD_PRELOAD"] = " ".join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    env.update({DIR_ENV: limited_dir, BYTES_ENV: str(budget), LOG_ENV: str(log)})
    return env


def injected_paths(log: Path) -> list[str]:
    """The path of every write the shim failed, in order (an absent log: it never fired)."""
    if not log.exists():
        return []
    return [line.removeprefix("ENOSPC ") for line in log.read_text().splitlines() if line]


def _drive(run_dir: str, out: Path) -> int:
    """``genbatch worker`` on shard 0 with EchoRunner as the model; the outcome to ``out`` as JSON."""
    import models.worker
    from genbatch.cli.commands import main
    from tests.faults._support import EchoRunner

    runner = EchoRunner()
    outcome: dict[str, Any] = {"error": None, "error_type": None}
    real_run_shard = models.worker.run_shard

    def run_shard(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return real_run_shard(*args, **kwargs)
        except Exception as exc:
            outcome.update(error=str(exc), error_type=type(exc).__name__)
            raise

    models.worker._load = lambda *args, **kwargs: runner
    models.worker.run_shard = run_shard
    rc = main(["worker", "--run-dir", run_dir, "--shard", "0", "--device", "cpu"])
    out.write_text(json.dumps({**outcome, "rc": rc, "calls": runner.calls}))
    return rc


if __name__ == "__main__":
    raise SystemExit(_drive(sys.argv[1], Path(sys.argv[2])))
