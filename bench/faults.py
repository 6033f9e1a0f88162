"""The fault-injection matrix, N times over, summarised in one line.

    python -m bench.faults --repeat N [--seed S] [-k EXPR] [--report PATH]

Runs the real suite (``pytest tests/faults``) with ``GENBATCH_FAULTS_REPEAT=N``: every fault class
repeats N times with fresh random injection points. Each repeat of each class appends its figures
(faults injected, faults observed, items lost and doubled, work redone, partial reads) to a JSONL
report; this script sums them and prints one line::

    faults=… by class … lost=0 doubled=0 max_redone=… partial_reads=0 injected==observed

then one JSON line with the same figures (DESIGN §4: bench prints JSON). ``injected==observed``
becomes ``injected!=observed`` when any repeat of any class saw fewer or more faults than were
injected. Classes that count repeats rather than faults (input validation, weights, corpus) add
the cases they ran. ``max_redone`` is the worker's own figure where it keeps attempt records
(``models/attempts.py``; the kill classes cross-check it against the harness probe). The matrix is
every class under ``tests/faults``: worker and launcher kills (``worker-SIGKILL``, ``worker-SIGTERM``,
``launcher-SIGKILL``), racing workers, GCS faults on commit writes, late deliveries
(``gcs-late-write``) and resumable uploads (``gcs-resumable``), alias swaps, disk full, weights,
input and malformed rows. The exit status is pytest's: a failing fault test fails the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT_ENV = "GENBATCH_FAULTS_REPORT"
REPEAT_ENV = "GENBATCH_FAULTS_REPEAT"
SEED_ENV = "GENBATCH_FAULTS_SEED"
# Figures that are known-bug demonstrations, not faults the system is expected to survive.
EXCLUDED = {"worker-race-errors-repro"}
# Classes whose "faults" are malformed input rows: reported as rows, not added to the fault total.
ROW_CLASSES = {"malformed-corpus", "malformed-10k"}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the per-repeat figures by class."""
    by_class: dict[str, dict[str, int]] = defaultdict(lambda: {"faults": 0, "observed": 0, "repeats": 0})
    mismatched: list[str] = []
    lost = doubled = partial = max_redone = 0
    for rec in records:
        cls = rec["fault_class"]
        if cls in EXCLUDED:
            continue
        entry = by_class[cls]
        entry["faults"] += int(rec["injected"])
        entry["observed"] += int(rec["observed"])
        entry["repeats"] += 1
        lost += int(rec["lost"])
        doubled += int(rec["doubled"])
        partial += int(rec["partial_reads"])
        max_redone = max(max_redone, int(rec["redone"]))
        if int(rec["injected"]) != int(rec["observed"]):
            mismatched.append(cls)
    total = sum(e["faults"] for cls, e in by_class.items() if cls not in ROW_CLASSES)
    rows = sum(e["faults"] for cls, e in by_class.items() if cls in ROW_CLASSES)
    return {
        "faults": total,
        "malformed_rows": rows,
        "by_class": dict(sorted(by_class.items())),
        "lost": lost,
        "doubled": doubled,
        "max_redone": max_redone,
        "partial_reads": partial,
        "injected_equals_observed": not mismatched,
        "mismatched_classes": sorted(set(mismatched)),
    }


def summary_line(summary: dict[str, Any]) -> str:
    classes = " ".join(f"{cls}={e['faults']}" for cls, e in summary["by_class"].items() if cls not in ROW_CLASSES)
    relation = "injected==observed" if summary["injected_equals_observed"] else "injected!=observed"
    return (f"faults={summary['faults']} by class {classes} lost={summary['lost']} doubled={summary['doubled']} "
            f"max_redone={summary['max_redone']} partial_reads={summary['partial_reads']} {relation} "
            f"(+ malformed_rows={summary['malformed_rows']}, each one reject)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats per fault class (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the injection points (default: the suite's)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to run part of the matrix")
    parser.add_argument("--report", type=Path, default=None, help="keep the per-repeat JSONL figures here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    report = args.report or Path(tempfile.mkdtemp(prefix="genbatch-faults-")) / "figures.jsonl"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("")
    env = {**os.environ, REPORT_ENV: str(report), REPEAT_ENV: str(args.repeat)}
    if args.seed is not None:
        env[SEED_ENV] = str(args.seed)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    tail = [line for line in proc.stdout.splitlines() if line.strip()][-1:]
    records = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    summary = summarise(records)
    print(summary_line(summary))
    print(json.dumps({"benchmark": "faults", "repeat": args.repeat, "wall_s": round(wall, 1),
                      "pytest": tail[0] if tail else "", "pytest_exit": proc.returncode, **summary,
                      "report": str(report)}))
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
