"""Start the worker as a local subprocess: the same command a Kubernetes pod runs.

One function (``worker_command``) builds the command for both backends, so a pod and a
local process for the same shard run exactly the same thing.

A killed and retried launcher never leaves two workers generating one shard on this host: the worker dies
with its launcher (``PR_SET_PDEATHSIG``), and a lease file per (run dir, shard) lets the next launch stop a
worker whose launcher is gone or wait for one whose launcher is alive. Across hosts the create-only part
files keep any overlap safe.

The two guards: docs/internals.md#genbatchstagesgenerate
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genbatch.errors import GenbatchError

log = logging.getLogger(__name__)

WORKER_MODULE = "genbatch"  # ``python -m WORKER_MODULE worker ...``; tests point it at their probe
ENV_LEASE_DIR = "GENBATCH_LEASE_DIR"
ENV_STALE_GRACE = "GENBATCH_STALE_WORKER_GRACE_S"
DEFAULT_STALE_GRACE_S = 120.0
DEATH_SIGNAL = signal.SIGTERM  # what the worker gets when its launcher dies: finish the batch, then stop
_PR_SET_PDEATHSIG = 1

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
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIALS_JSON", "API_KEY")


def worker_environment(env: dict[str, str]) -> dict[str, str]:
    """The allow-listed part of ``env``; secret-looking names are dropped even under allowed prefixes."""
    def allowed(name: str) -> bool:
        upper = name.upper()
        if any(word in upper for word in SECRET_WORDS):
            return False
        return upper in _PASS_NAMES or upper.startswith(_PASS_PREFIXES)

    return {k: v for k, v in env.items() if allowed(k)}


def local_worker_command(run_dir: str, shard: int) -> list[str]:
    """The worker contract run with this interpreter (``python -m genbatch worker ...``)."""
    return [sys.executable, "-m", WORKER_MODULE, *worker_command(run_dir, shard)[1:]]


# --------------------------------------------------------------------------- dying with the launcher


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved in the parent (the child only calls it); None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
        return fn
    except (OSError, AttributeError):
        return None


def _die_with(parent_pid: int, sig: int = DEATH_SIGNAL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when ``parent_pid`` (its launcher) exits.

    The kernel sends it when the *thread* that forked exits: launch from the task's main thread.
    If the launcher is already gone when the child gets here, the child exits at once.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    if threading.current_thread() is not threading.main_thread():
        # From a pool thread the child would be killed when that thread ends, not the launcher:
        # rely on the lease and create-only parts instead.
        log.warning("worker launched from a non-main thread: it will not die with its launcher")
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent_pid:
            os._exit(128 + int(sig))

    return preexec


def die_with_parent(sig: int = DEATH_SIGNAL) -> None:
    """Called by a process itself (the worker's device processes): ``sig`` when its parent exits."""
    prctl = _prctl()
    if prctl is not None:
        parent = os.getppid()
        prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)


# --------------------------------------------------------------------------- the lease


def _start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):  # reaped by nobody yet, or dead: not running
        return None
    return int(fields[19])


def _running(pid: int | None, ticks: int | None) -> bool:
    return pid is not None and ticks is not None and _start_ticks(pid) == ticks


def lease_path(run_dir: str, shard: int) -> Path:
    """The lease file of (run dir, shard) on this host, under ``$GENBATCH_LEASE_DIR`` (default ``<tmp>/genbatch-leases``)."""
    base = Path(os.environ.get(ENV_LEASE_DIR) or Path(tempfile.gettempdir()) / "genbatch-leases")
    key = hashlib.sha256(f"{run_dir.rstrip('/')}\0{shard}".encode()).hexdigest()[:32]
    return base / f"{key}.json"


def read_lease(run_dir: str, shard: int) -> dict[str, Any] | None:
    """The lease of (run dir, shard) on this host, or None when there is none or it cannot be read."""
    try:
        value = json.loads(lease_path(run_dir, shard).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _take_lease(run_dir: str, shard: int, worker_pid: int) -> Path:
    path = lease_path(run_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    lease = {"run_dir": run_dir, "shard": shard, "host": socket.gethostname(),
             "worker_pid": worker_pid, "worker_ticks": _start_ticks(worker_pid),
             "launcher_pid": os.getpid(), "launcher_ticks": _start_ticks(os.getpid()), "taken_at": time.time()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(lease))
    os.replace(tmp, path)
    return path


def _release_lease(path: Path, worker_pid: int) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("worker_pid") == worker_pid:
            path.unlink()


def _stale_grace_s() -> float:
    """Seconds a worker gets after SIGTERM to commit its batch in flight ($GENBATCH_STALE_WORKER_GRACE_S)."""
    return float(os.environ.get(ENV_STALE_GRACE, DEFAULT_STALE_GRACE_S))


def _wait_gone(pid: int, ticks: int, timeout_s: float | None) -> bool:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while _running(pid, ticks):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_stale_worker(run_dir: str, shard: int, *, grace_s: float | None = None,
                      wait_s: float | None = None) -> dict[str, Any] | None:
    """Before a launch: make sure no earlier worker of this shard still runs on this host.

    A worker whose launcher is gone gets SIGTERM (it commits its batch in flight), ``grace_s`` to
    exit, then SIGKILL; one whose launcher is alive is waited for (up to ``wait_s``). Returns what
    was done (None when nothing was running).
    """
    lease = read_lease(run_dir, shard)
    if lease is None:
        return None
    pid, ticks = lease.get("worker_pid"), lease.get("worker_ticks")
    if lease.get("host") != socket.gethostname() or not isinstance(pid, int) or not _running(pid, ticks):
        return None
    assert isinstance(ticks, int)
    grace = _stale_grace_s() if grace_s is None else grace_s
    t0 = time.monotonic()
    if _running(lease.get("launcher_pid"), lease.get("launcher_ticks")):
        log.warning("shard %s: worker pid %s of a launch that is still running (pid %s) works on this shard; "
                    "waiting for it to finish before starting another", shard, pid, lease.get("launcher_pid"))
        if not _wait_gone(pid, ticks, wait_s):
            raise WorkerFailed(f"worker for shard {shard}: another launch's worker (pid {pid}) still runs after "
                               f"{wait_s} s; not starting a second one", exit_code=1)
        return {"pid": pid, "action": "waited", "seconds": round(time.monotonic() - t0, 3)}
    log.warning("shard %s: worker pid %s of an earlier attempt outlived its launcher; stopping it (SIGTERM, "
                "%.0f s to commit its batch in flight) before starting a new one", shard, pid, grace)
    action = "terminated"
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, ticks, grace):
        action = "killed"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, ticks, 30.0)
    seconds = time.monotonic() - t0
    log.warning("shard %s: stale worker pid %s %s after %.2f s", shard, pid, action, seconds)
    return {"pid": pid, "action": action, "seconds": round(seconds, 3)}


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Our own worker, when we are being stopped: SIGTERM, ``grace_s``, SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- the launch


def _follow(path_fd: int, proc: subprocess.Popen[bytes], sink: Callable[[str], None], poll_s: float = 0.05) -> None:
    """Hand every complete line the worker writes to its log file to ``sink`` until it exits."""
    with os.fdopen(path_fd, "rb") as reader:
        pending = b""
        while True:
            chunk = reader.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    sink(pending.decode("utf-8", "replace").rstrip("\n"))
                    pending = b""
                continue
            if proc.poll() is not None:
                rest = pending + reader.read()
                for line in rest.decode("utf-8", "replace").splitlines():
                    sink(line)
                return
            time.sleep(poll_s)


def run_worker_process(run_dir: str, shard: int, timeout_s: float | None = None) -> dict[str, Any]:
    """Run the worker for one shard (:func:`run_logged_command`), after stopping a stale one.

    First stops (or waits for) a worker an earlier launch of this shard left running; a lease file
    names the new worker while it runs, so the next launch can do the same.
    """
    stop_stale_worker(run_dir, shard, wait_s=timeout_s)

    def lease(pid: int) -> Callable[[], None]:
        path = _take_lease(run_dir, shard, pid)
        return lambda: _release_lease(path, pid)

    return run_logged_command(local_worker_command(run_dir, shard), f"worker for shard {shard}", f"worker[{shard}]",
                              timeout_s=timeout_s, on_start=lease)


def run_logged_command(cmd: list[str], what: str, log_prefix: str, *, timeout_s: float | None = None,
                       on_start: Callable[[int], Callable[[], None]] | None = None) -> dict[str, Any]:
    """Run a worker-contract command, streaming its log lines into our log; returns its last line's JSON.

    The child dies with this process; if this function is interrupted (the task is stopped), the
    child is stopped too (SIGTERM, then SIGKILL after the grace period). The child writes its output
    to an unlinked temp file this process follows, not to a pipe: a worker whose launcher was killed
    must not die of a broken pipe in the middle of committing its work. ``on_start(pid)`` returns
    what to call when the child is gone (the shard lease). A non-zero exit raises :class:`WorkerFailed`
    (``permanent`` for :data:`EXIT_PERMANENT`), naming ``what`` and the last lines of its output.
    """
    log.info("%s: running %s", what, " ".join(cmd))
    tail: list[str] = []

    def sink(line: str) -> None:
        nonlocal tail
        log.info("%s %s", log_prefix, line)
        tail = [*tail[-19:], line]

    fd, path = tempfile.mkstemp(prefix="genbatch-worker-", suffix=".log")
    try:
        read_fd = os.open(path, os.O_RDONLY)
        try:
            with os.fdopen(fd, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                        env=worker_environment(dict(os.environ)), preexec_fn=_die_with(os.getpid()))
        except BaseException:
            os.close(read_fd)
            raise
    finally:
        os.unlink(path)  # both ends stay open; nothing is left behind whoever exits first
    release = on_start(proc.pid) if on_start is not None else None
    try:
        _follow(read_fd, proc, sink)
        code = proc.wait(timeout=timeout_s)
    except BaseException:
        _stop(proc, _stale_grace_s())
        raise
    finally:
        if release is not None:
            release()
    if code != 0:
        reason = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
        detail = "\n".join(tail[-5:])
        raise WorkerFailed(f"{what} {reason}: {detail}", exit_code=code)
    try:
        result: dict[str, Any] = json.loads(tail[-1])
    except (IndexError, ValueError):
        raise WorkerFailed(f"{what} exited 0 but its last output line is not its JSON result: {tail[-1:]}; "
                           "check the worker image runs the same genbatch version", exit_code=1) from None
    return result
