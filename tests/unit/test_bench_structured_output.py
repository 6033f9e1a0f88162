"""bench/structured_output.py runs its three legs and reports validity and ratios (a smoke size: the figures in
docs/benchmarks.md come from the full run named there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_bench_prints_one_line_with_every_schema_output_valid() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.structured_output", "--items", "24", "--pairs", "1"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["bench"] == "structured_output" and line["items"] == 24
    assert line["schema_valid_rate"] == 1.0
    assert set(line["items_per_s"]) == {"plain", "schema", "cold"}
    assert line["new_tokens_per_item"]["schema"] > line["new_tokens_per_item"]["plain"]  # JSON is longer than prose
    assert line["states_cached"] > 0
