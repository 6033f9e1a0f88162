"""bench/scale_e2e.py: its generated inputs, and one tiny end-to-end run's report shape (never its timings).

The run is a child process: the bench pins its legs to one core, which must not stick to the test session.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from bench.scale_e2e import BAD_ROW_EVERY, write_inputs

REPO = Path(__file__).resolve().parents[2]


def test_the_generated_inputs_hold_every_row_once_over_the_files(tmp_path: Path) -> None:
    rows, files = 2 * BAD_ROW_EVERY + 5, 8
    made = write_inputs(tmp_path / "in", rows, files)
    assert made["uri"] == str(tmp_path / "in" / "part-*") and made["bad_rows"] == 2
    names = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert len(names) == files and sum(n.endswith(".gz") for n in names) == 2
    ids, missing_prompt = [], 0
    for name in names:
        data = (tmp_path / "in" / name).read_bytes()
        text = gzip.decompress(data).decode() if name.endswith(".gz") else data.decode()
        for line in text.splitlines():
            row = json.loads(line)
            ids.append(row["id"])
            missing_prompt += "prompt" not in row
    assert len(ids) == len(set(ids)) == rows and missing_prompt == 2


def test_a_tiny_run_accounts_for_every_row_in_both_legs() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.scale_e2e", "--sizes", "120", "--files", "4", "--shards", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    size = report["sizes"]["120"]
    for leg in ("direct", "embedded"):
        assert size[leg]["accounted"] is True, size[leg]
        assert size[leg]["counts"]["input"] == 120 and size[leg]["counts"]["generated"] == 120
        assert size[leg]["peak_rss_mib"]["airflow"] > 0 and size[leg]["peak_rss_mib"]["worker"] > 0
        assert set(size[leg]["items_per_s"]) == {"validate_input", "preprocess", "generate"}
    assert report["pass"]["accounted"] is True and report["airflow_rss_ratio_largest_vs_smallest"] == 1.0
