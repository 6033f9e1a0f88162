"""The collector of a short-lived process (genbatch.cli.process): one ``genbatch run``'s own collections and exit.

``python -m bench.process_gc [--rows 300] [--repeat 3]``

Two legs, interleaved, each ``genbatch run`` of the same spec (``bench.e2e_vs_script``'s: held-out catalog
prompts, catalog-copy v2, greedy, 32 new tokens, 1 shard, embedded), whole processes pinned to one core:

tuned     ``genbatch.cli.commands.console_main``: what the executable and ``python -m genbatch`` run;
defaults  ``genbatch.cli.commands.main`` called plainly: CPython's collector, as before.

In each leg the ``genbatch run`` process reports (from a ``gc.callbacks`` hook and an ``atexit`` hook that
runs after the work) its collections by generation and their seconds; the bench adds the exit: from that
hook to the process's end, the interpreter's tear-down. The worker and the Beam job are tuned in both legs
(they are started by their own entry points), so the wall ratio is the run process's share of the change;
``bench.e2e_vs_script --baseline`` gives the whole before/after. Medians; one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.e2e_vs_script import REPO, _commit, _env, _pin, setup

LEGS = ("tuned", "defaults")

# Run in the measured process: the hooks first, then genbatch as the leg says.
WRAPPER = """
import atexit, gc, json, sys, time
report, leg = sys.argv[1], sys.argv[2]
stats = {"gc_s": [0.0, 0.0, 0.0], "collections": [0, 0, 0]}
started = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        stats["gc_s"][info["generation"]] += time.perf_counter() - started[0]
        stats["collections"][info["generation"]] += 1
gc.callbacks.append(on_gc)
def write():
    stats["work_done"] = time.time()
    with open(report, "w") as f:
        json.dump(stats, f)
atexit.register(write)  # registered first, so it runs last of the atexit hooks: right before the tear-down
sys.argv = ["genbatch", *sys.argv[3:]]
from genbatch.cli.commands import console_main, main
if leg == "tuned":
    console_main()
raise SystemExit(main())
"""


def one(leg: str, args: list[str], tag: str, work: Path) -> dict[str, Any]:
    """One pinned ``genbatch ARGS`` process as ``leg`` runs it: wall seconds, its collections and its exit."""
    import subprocess

    report = work / f"{tag}.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, str(report), leg, *args],
                          cwd=work, env=_env(work), capture_output=True, text=True, timeout=1800, preexec_fn=_pin,
                          check=False)
    wall, ended = time.perf_counter() - start, time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"{leg} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    stats = json.loads(report.read_text())
    return {"wall_s": wall, "gc_s": sum(stats["gc_s"]), "gc_s_by_generation": stats["gc_s"],
            "collections": stats["collections"], "exit_s": ended - stats["work_done"]}


def measure(rows: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-process-gc-") as tmp:
        work = Path(tmp)
        spec = setup(work, [rows], 32)["sizes"][rows]["spec"]
        results: dict[str, list[dict[str, Any]]] = {leg: [] for leg in LEGS}
        for rep in range(repeat + 1):  # the first repetition warms the page cache and is not counted
            for leg in LEGS if rep % 2 == 0 else LEGS[::-1]:
                run_id = f"gc-{leg}-{rep}"
                got = one(leg, ["run", str(spec), "--run-id", run_id], run_id, work)
                print(f"process_gc: rep {rep} {leg}: {got['wall_s']:.2f} s, gc {got['gc_s']:.2f} s, "
                      f"exit {got['exit_s']:.2f} s", file=sys.stderr)
                if rep:
                    results[leg].append(got)
    out: dict[str, Any] = {"bench": "process_gc", "rows": rows, "repeat": repeat}
    for leg in LEGS:
        runs = results[leg]
        out[leg] = {key: round(statistics.median(r[key] for r in runs), 3) for key in ("wall_s", "gc_s", "exit_s")}
        out[leg]["collections"] = [statistics.median(r["collections"][g] for r in runs) for g in range(3)]
        out[leg]["gc_s_by_generation"] = [round(statistics.median(r["gc_s_by_generation"][g] for r in runs), 3)
                                          for g in range(3)]
    out["ratios"] = {f"{key}_tuned_vs_defaults": round(out["tuned"][key] / out["defaults"][key], 3)
                     for key in ("wall_s", "gc_s", "exit_s")}
    out["commit"] = _commit(REPO)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.process_gc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.rows, args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
