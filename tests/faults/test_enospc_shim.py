"""The ENOSPC injector itself (``enospc.c``): what it fails, what it lets through, what it logs.

The disk-full test relies on it, so each intercepted call is checked in a real preloaded process: the
budget is spent exactly (a straddling write is short, then ENOSPC), files outside the directory are
untouched, threads share one budget without over-spending it, every failure is one log line, and
``GENBATCH_FAULTS_INJECT=0`` turns it into a pass-through (so with it set globally these tests fail).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.enospc import armed_env, injected_paths
from tests.injection import INJECT_ENV

pytestmark = pytest.mark.integration

BUDGET = 1000

# Run in the preloaded process; prints one JSON object: each step's outcome.
SCRIPT = r"""
import errno, json, os, shutil, sys, threading
lim, out = sys.argv[1], sys.argv[2]
res = {}

def attempt(name, fn):
    try:
        res[name] = fn()
    except OSError as e:
        res[name] = errno.errorcode[e.errno]

def raw(name, data):
    fd = os.open(os.path.join(lim, name), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)

def fd_call(name, fn):
    fd = os.open(os.path.join(lim, name), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return fn(fd)
    finally:
        os.close(fd)

def py_file(name, data):
    with open(os.path.join(lim, name), "wb") as f:  # as genbatch/io/local.py writes: write, flush, close
        n = f.write(data)
        f.flush()
        return n

attempt("a", lambda: raw("a", b"a" * 400))
attempt("b", lambda: raw("b", b"b" * 400))
attempt("c_short", lambda: raw("c", b"c" * 400))
attempt("outside", lambda: open(os.path.join(out, "x"), "wb").write(b"x" * 5000))
attempt("d_write", lambda: raw("d", b"d"))
attempt("e_pwrite", lambda: fd_call("e", lambda fd: os.pwrite(fd, b"e", 0)))
attempt("f_writev", lambda: fd_call("f", lambda fd: os.writev(fd, [b"f", b"f"])))
attempt("g_sendfile", lambda: shutil.copyfile(os.path.join(out, "x"), os.path.join(lim, "g")) and 0)
attempt("h_fallocate", lambda: fd_call("h", lambda fd: os.posix_fallocate(fd, 0, 10)) or 0)
attempt("i_python_file", lambda: py_file("i", b"i" * 10))
print(json.dumps(res))
"""

THREADS = r"""
import errno, os, sys, threading
lim = sys.argv[1]
failures = []

def worker(k):
    fd = os.open(os.path.join(lim, f"t{k}"), os.O_WRONLY | os.O_CREAT, 0o644)
    for _ in range(100):
        try:
            os.write(fd, b"0123456789")
        except OSError as e:
            failures.append(e.errno)
    os.close(fd)

threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(len(failures), set(failures) == {errno.ENOSPC})
"""


def _run(script: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    lim, out = tmp_path / "limited", tmp_path / "outside"
    lim.mkdir(parents=True)
    out.mkdir()
    return lim, out, tmp_path / "enospc.log"


def test_each_intercepted_call_fails_past_the_budget_and_is_logged_unless_switched_off(tmp_path: Path,
                                                                                       enospc_shim: Path) -> None:
    lim, out, log = _dirs(tmp_path / "on")
    res = json.loads(_run(SCRIPT, armed_env(dict(os.environ), enospc_shim, str(lim), BUDGET, log), str(lim), str(out)))
    fails = {"d_write", "e_pwrite", "f_writev", "g_sendfile", "h_fallocate", "i_python_file"}
    assert res == {"a": 400, "b": 400, "c_short": 200, "outside": 5000, **dict.fromkeys(fails, "ENOSPC")}, res
    assert (lim / "c").stat().st_size == 200 and (lim / "i").stat().st_size == 0
    logged = [Path(p).name for p in injected_paths(log)]
    # Python's file object tries its buffered bytes again on close: "i" fails twice (flush, close).
    assert logged == ["d", "e", "f", "g", "h", "i", "i"], logged
    # The project-wide switch: the same steps with GENBATCH_FAULTS_INJECT=0 all go through, nothing logged.
    lim, out, log = _dirs(tmp_path / "off")
    env = {**armed_env(dict(os.environ), enospc_shim, str(lim), BUDGET, log), INJECT_ENV: "0"}
    res = json.loads(_run(SCRIPT, env, str(lim), str(out)))
    assert res["c_short"] == 400 and res["g_sendfile"] == 0 and res["i_python_file"] == 10, res
    assert "ENOSPC" not in res.values() and not log.exists(), res


def test_threads_share_one_budget(tmp_path: Path, enospc_shim: Path) -> None:
    lim, _out, log = _dirs(tmp_path)
    env = armed_env(dict(os.environ), enospc_shim, str(lim), BUDGET, log)
    failures, only_enospc = _run(THREADS, env, str(lim)).split()
    assert sum(p.stat().st_size for p in lim.iterdir()) == BUDGET  # 4 threads x 100 writes of 10 bytes
    assert int(failures) == 4 * 100 - BUDGET // 10 and only_enospc == "True"
    assert len(injected_paths(log)) == int(failures)
