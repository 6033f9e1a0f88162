"""bench/e2e_vs_script.py: the competent user's script writes every item once, and the fixed-cost line.

The whole bench (genbatch run, the worker and the script, interleaved) is not run here: its legs are
``genbatch run`` and ``genbatch worker``, which the integration suite runs on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.e2e_vs_script import _above_floor, _side, _vs_baseline, line, timed

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "models" / "zoo" / "catalog-copy" / "v2"


def test_the_line_through_two_sizes_gives_fixed_cost_and_slope() -> None:
    assert line({300: 27.0, 3000: 32.0}) == {"fixed_s": 26.44, "per_item_ms": 1.852}
    assert line({100: 5.0}) == {"fixed_s": 5.0, "per_item_ms": 0.0}


def test_the_run_above_the_floor_is_the_run_less_the_floors_median() -> None:
    got = _above_floor([8.0, 9.0, 8.5], {300: 11.0, 3000: 14.0})
    assert (got["wall_s"], got["min"], got["max"]) == (8.5, 8.0, 9.0)
    assert got["run_above_floor_s"] == {"300": 2.5, "3000": 5.5}
    assert got["run_fixed_above_floor_s"] == round(line({300: 11.0, 3000: 14.0})["fixed_s"] - 8.5, 2) == 2.17


def test_the_script_baseline_writes_one_line_per_prompt(tmp_path: Path) -> None:
    prompts = tmp_path / "items.jsonl"
    rows = [{"id": f"i{i}", "prompt": f"colour: red | material: wool | item: scarf {'soft ' * (i % 7)}\ndescription:"}
            for i in range(70)]  # two batches of up to 64, lengths out of order
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench.e2e_vs_script", "_script", "--model-dir", str(MODEL_DIR),
                           "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "4"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["id"] for r in written) == sorted(r["id"] for r in rows)
    assert all(isinstance(r["output"], str) for r in written)


def test_a_legs_cpu_time_counts_its_process_tree_and_not_its_waiting(tmp_path: Path) -> None:
    """timed: the CPU seconds of a process and the child it waits for (genbatch run's worker and Beam job
    are such children), and none for time spent asleep."""
    burn = "import time; t = time.process_time(); exec('while time.process_time() - t < 0.3: pass')"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}], check=True)"
    env = {**os.environ}
    wall, cpu = timed([sys.executable, "-c", parent], tmp_path, env)
    assert cpu >= 0.3 and wall >= cpu * 0.9  # the grandchild's 0.3 s of CPU is counted
    wall, cpu = timed([sys.executable, "-c", "import time; time.sleep(0.6)"], tmp_path, env)
    assert wall >= 0.6 and cpu < 0.3  # asleep: wall time, hardly any CPU


def test_a_baseline_checkouts_legs_run_its_code_in_their_own_home(tmp_path: Path) -> None:
    """--baseline: run@baseline and worker@baseline run the other checkout, the run in its own embedded home;
    the report divides this checkout's medians by the baseline's."""
    ctx = {"baseline": tmp_path / "before"}
    assert _side("run@baseline", ctx, tmp_path) == ("run", tmp_path / "before", tmp_path / "baseline")
    assert _side("worker@baseline", ctx, tmp_path) == ("worker", tmp_path / "before", tmp_path / "baseline")
    assert _side("run", ctx, tmp_path) == ("run", REPO, tmp_path)
    medians = {"run": 9.0, "run@baseline": 12.0, "worker": 2.0, "worker@baseline": 4.0, "script": 5.0}
    assert _vs_baseline(medians) == {"run": 0.75, "worker": 0.5}

