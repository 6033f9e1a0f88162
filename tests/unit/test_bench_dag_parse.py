"""bench/dag_parse.py end to end with a handful of specs: the report's shape and DAG counts, never its timings.

Run as a child process: the bench pins itself to one core, which must not stick to the test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.dag_parse import ERRORS, FACTORY, ONE_OFF, mix, write_specs

REPO = Path(__file__).resolve().parents[2]


def test_the_mix_has_every_kind_and_adds_up() -> None:
    assert mix(200) == {"cron": 150, "arrival": 25, "assets": 20, "queue": 5}
    assert mix(5) == {"cron": 2, "arrival": 1, "assets": 1, "queue": 1}
    assert mix(0) == {"cron": 0, "arrival": 0, "assets": 0, "queue": 0}


def test_generated_specs_are_valid_scheduled_specs(tmp_path: Path) -> None:
    counts = write_specs(tmp_path / "specs", 12, tmp_path)  # raises unless the factory's loader accepts all
    assert sum(counts.values()) == len(list((tmp_path / "specs").glob("*.yaml"))) == 12


def test_a_small_run_reports_every_leg_and_one_dag_per_spec() -> None:
    n = 5
    proc = subprocess.run([sys.executable, "-m", "bench.dag_parse", "--specs", str(n), "--repeat", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["bench"] == "dag_parse" and summary["specs"] == n and summary["repeat"] == 1
    assert summary["mix"] == mix(n)
    files = summary["files"]
    assert set(files) == {f"{FACTORY}@{n}", f"{FACTORY}@0", f"{FACTORY}@{n} task", f"{ERRORS}@{n}", ONE_OFF}
    # a task process of genbatch__cron-000 builds that spec's DAG only: one DAG, batch_generation's 10 tasks
    assert (files[f"{FACTORY}@{n} task"]["dags"], files[f"{FACTORY}@{n} task"]["tasks"]) == (1, 10)
    assert (files[f"{ERRORS}@{n}"]["dags"], files[f"{ERRORS}@{n}"]["import_errors"]) == (0, {})  # all valid
    full = files[f"{FACTORY}@{n}"]
    assert full["import_errors"] == {}
    assert full["dags"] - full["event_dags"] == n  # one genbatch__<name> DAG per spec
    assert full["event_dags"] == summary["mix"]["arrival"] + summary["mix"]["queue"]  # and an events DAG each
    assert files[f"{FACTORY}@0"]["dags"] == 0 and (files[ONE_OFF]["dags"], files[ONE_OFF]["tasks"]) == (1, 10)
    report = summary["dags_report"]["files"]
    assert (report[FACTORY]["dags"], report[FACTORY]["tasks"]) == (full["dags"], full["tasks"])
    assert report[ONE_OFF]["dags"] == 1
    for leg in files.values():
        for figure in ("dagbag_s", "serialize_s", "parse_and_serialize_s"):
            assert set(leg[figure]) == {"median", "min", "max"} and leg[figure]["min"] >= 0
    assert isinstance(summary["pass"], bool) and summary["target_s"] == 2.0
    assert summary["cpu"]["pinned"] == summary["cpu"]["available"][:1]
