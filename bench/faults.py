"""The fault-injection matrix, N times over, summarised in one line; or the proof that every fault test can fail.

    python -m bench.faults --repeat N [--seed S] [-k EXPR] [--report PATH]
    python -m bench.faults --injection off [-k EXPR]

Runs the real suite (``pytest tests/faults``) with ``GENBATCH_FAULTS_REPEAT=N``: every fault class
repeats N times with fresh random injection points. Each repeat of each class appends its figures
(faults injected, faults observed, items lost and doubled, work redone, partial reads) to a JSONL
report; this script sums them and prints one line::

    faults=… by class … lost=0 doubled=0 max_redone=… partial_reads=0 injected==observed

then one JSON line with the same figures (DESIGN §4: bench prints JSON). ``injected==observed``
becomes ``injected!=observed`` when any repeat of any class saw fewer or more faults than were
injected, or a class injected none. Classes that count repeats rather than faults (input
validation, weights, corpus) add the cases they ran. ``max_redone`` is the worker's own figure where
it keeps attempt records (``models/attempts.py``; the kill classes cross-check it against the harness
probe). The exit status is non-zero when pytest fails, when injected != observed, or when anything
was lost, doubled or read partially.

``--injection off`` runs the same tests with ``GENBATCH_FAULTS_INJECT=0`` (``tests/injection.py``:
every injector stands down) and prints one line per test: each must FAIL, since each asserts that
its fault fired. Tests marked ``no_injection`` (checks of the injectors themselves) are left out.
The exit status is non-zero if any test passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REPORT_ENV = "GENBATCH_FAULTS_REPORT"
REPEAT_ENV = "GENBATCH_FAULTS_REPEAT"
SEED_ENV = "GENBATCH_FAULTS_SEED"
INJECT_ENV = "GENBATCH_FAULTS_INJECT"  # tests/injection.py
# Classes whose "faults" are malformed input rows: reported as rows, not added to the fault total.
ROW_CLASSES = {"malformed-corpus", "malformed-10k"}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the per-repeat figures by class."""
    by_class: dict[str, dict[str, int]] = defaultdict(lambda: {"faults": 0, "observed": 0, "repeats": 0})
    mismatched: list[str] = []
    lost = doubled = partial = max_redone = 0
    for rec in records:
        cls = rec["fault_class"]
        entry = by_class[cls]
        entry["faults"] += int(rec["injected"])
        entry["observed"] += int(rec["observed"])
        entry["repeats"] += 1
        lost += int(rec["lost"])
        doubled += int(rec["doubled"])
        partial += int(rec["partial_reads"])
        max_redone = max(max_redone, int(rec["redone"]))
        if int(rec["injected"]) != int(rec["observed"]) or int(rec["injected"]) < 1:
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


def _pytest(extra: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - t0


def run_matrix(args: argparse.Namespace) -> int:
    """The matrix with injection on: figures summed, exit non-zero on any failure or mismatch."""
    report = args.report or Path(tempfile.mkdtemp(prefix="genbatch-faults-")) / "figures.jsonl"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("")
    env = {**os.environ, REPORT_ENV: str(report), REPEAT_ENV: str(args.repeat), INJECT_ENV: "1"}
    if args.seed is not None:
        env[SEED_ENV] = str(args.seed)
    proc, wall = _pytest(["-k", args.keyword] if args.keyword else [], env)
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
    if problems := verdict(summary, len(records)):
        print(f"bench.faults: FAILED: {', '.join(problems)} (classes: {summary['mismatched_classes']})", file=sys.stderr)
        return 1
    return 0


def verdict(summary: dict[str, Any], n_records: int) -> list[str]:
    """What makes a passing pytest run still a failed benchmark: each named once."""
    checks = (("injected!=observed", not summary["injected_equals_observed"]), ("lost", summary["lost"]),
              ("doubled", summary["doubled"]), ("partial_reads", summary["partial_reads"]), ("no figures", not n_records))
    return [name for name, bad in checks if bad]


def outcomes(junit_xml: Path) -> dict[str, str]:
    """test id -> "passed" or the first line of why it failed (failure, error), from a JUnit report."""
    result = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        bad = next((child for child in case if child.tag in {"failure", "error"}), None)
        skipped = next((child for child in case if child.tag == "skipped"), None)
        if bad is not None:
            message = (bad.get("message") or bad.text or bad.tag).strip().splitlines()
            result[test_id] = f"{bad.tag}: {message[0][:160] if message else ''}"
        elif skipped is not None:
            result[test_id] = "skipped"
        else:
            result[test_id] = "passed"
    return result


def run_injection_off(args: argparse.Namespace) -> int:
    """Every fault test with every injector off: each must fail (proof that it checks its fault fired)."""
    junit = Path(tempfile.mkdtemp(prefix="genbatch-faults-off-")) / "junit.xml"
    env = {**os.environ, REPEAT_ENV: "1", INJECT_ENV: "0"}
    env.pop(REPORT_ENV, None)
    extra = ["-m", "not gpu and not no_injection", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    proc, wall = _pytest([*extra, "-k", args.keyword] if args.keyword else extra, env)
    if not junit.exists():
        print(proc.stdout[-4000:] + proc.stderr[-4000:], file=sys.stderr)
        return 2
    seen = outcomes(junit)
    for test_id, outcome in sorted(seen.items()):
        print(f"{'FAILS' if outcome not in {'passed', 'skipped'} else 'PASSES':<6} {test_id}  [{outcome}]")
    passing = sorted(t for t, o in seen.items() if o in {"passed", "skipped"})
    print(json.dumps({"benchmark": "faults", "injection": "off", "wall_s": round(wall, 1), "tests": len(seen),
                      "failed_as_required": len(seen) - len(passing), "passed_without_their_fault": passing}))
    if not seen or passing:
        print(f"bench.faults: {len(passing)} fault test(s) pass with injection off: they cannot tell "
              "whether their fault fired", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats per fault class (default 5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the injection points (default: the suite's)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to run part of the matrix")
    parser.add_argument("--report", type=Path, default=None, help="keep the per-repeat JSONL figures here")
    parser.add_argument("--injection", choices=["on", "off"], default="on",
                        help="off: run each fault test with every injector stood down; each must fail")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return run_matrix(args) if args.injection == "on" else run_injection_off(args)


if __name__ == "__main__":
    raise SystemExit(main())
