"""A 64-file glob input (JSONL, gzipped JSONL, CSV, gzipped CSV; a few bad rows across files) run end to end
with ``genbatch run`` (the embedded DAG): every input row ends in exactly one output, reject or error.
quality_gate and publish run as worker commands here, as they do for a run over ``execution.inline_max_rows``
(that the operators start a ``genbatch stage`` process is shown in tests/unit/test_stage_jobs.py)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from tests.contract_check import check_against_contract

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NUM_FILES = 64
ROWS_PER_FILE = 3


def _good_rows() -> list[dict[str, Any]]:
    lines = (REPO / "examples/catalog/items.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines[: NUM_FILES * ROWS_PER_FILE]]


def _jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _csv(rows: list[Any]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "prompt", "category"])
    for r in rows:
        writer.writerow(r if isinstance(r, list) else [r["id"], r["prompt"], r["category"]])
    return out.getvalue().encode()


def write_input(folder: Path) -> tuple[int, dict[str, int]]:
    """64 files ``part-NN.*`` (every 4th gzipped, every 8th CSV) and bookkeeping the glob must skip.

    Returns the number of input rows and the reject rules expected.
    """
    folder.mkdir(parents=True)
    good = _good_rows()
    bad: dict[int, list[Any]] = {
        5: [{"id": "bad/slash", "prompt": "colour: red | material: wool | item: scarf\ndescription:"}],
        20: ['{"id": "broken", "prompt": "unterminated'],  # gzipped JSONL
        24: [["ragged", "too", "many", "fields"]],  # CSV
        33: [{"id": "no-prompt"}],
        63: [{"id": good[0]["id"], "prompt": "the first file's first id again\ndescription:"}],
    }
    expected = {"id_unsafe": 1, "parse_error": 2, "prompt_missing": 1, "duplicate_id": 1}
    total = 0
    for n in range(NUM_FILES):
        rows: list[Any] = good[n * ROWS_PER_FILE:(n + 1) * ROWS_PER_FILE] + bad.get(n, [])
        total += len(rows)
        is_csv = n % 8 == 0
        data = _csv(rows) if is_csv else _jsonl(rows)
        name = f"part-{n:02d}.{'csv' if is_csv else 'jsonl'}"
        if n % 4 == 0:
            data, name = gzip.compress(data), name + ".gz"
        (folder / name).write_bytes(data)
    (folder / "_SUCCESS").write_bytes(b"")
    return total, expected


# The default row rules (in validate_input) here; row_rules: pipeline runs end to end on a 4-file glob, every row
# reconciled, in tests/unit/test_bench_scale_e2e.py (bench/scale_e2e.py runs with it): one genbatch run less.
@pytest.mark.parametrize("row_rules", ["validate"])
def test_sixty_four_file_glob_runs_end_to_end_with_every_row_accounted_for(tmp_path: Path, row_rules: str) -> None:
    """``row_rules``: the row rules in the validate_input task, or in the Beam job (validate_input samples)."""
    total, expected_rejects = write_input(tmp_path / "in")
    spec = {
        "task": "text",
        "input": {"uri": str(tmp_path / "in" / "part-*"), "max_files": 64, "row_rules": row_rules},
        "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"max_new_tokens": 6, "seed": 5},
        "sharding": {"num_shards": 4},
        # quality_gate and publish as worker commands, as for a run over the threshold (genbatch.stages.stage_jobs)
        "execution": {"inline_max_rows": 0},
        "quality": {"max_reject_rate": 0.2, "min_nonempty_rate": 0.0, "max_duplicate_output_rate": 1.0},
        "output": {"uri": str(tmp_path / "runs")},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "genbatch", "run", str(spec_path), "--run-id", "many"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    layout = RunLayout(str(tmp_path / "runs" / "many"))
    pinned = storage.read_json(layout.input_files)["files"]
    assert [Path(f["uri"]).name for f in pinned] == sorted(p.name for p in (tmp_path / "in").glob("part-*"))
    report = storage.read_json(layout.validation_report)
    assert report["rows"]["input"] == total
    assert [f["rows"] for f in report["files"]] == [
        ROWS_PER_FILE + (n in (5, 20, 24, 33, 63)) for n in range(NUM_FILES)]
    assert [f["first_row_index"] for f in report["files"]][:3] == [0, 3, 6]
    assert storage.exists(layout.validation_accepted) is (row_rules == "validate")
    assert storage.exists(layout.validation_sample) is (row_rules == "pipeline")

    # Every row_index 0..total-1 in exactly one place; ids once among outputs and errors.
    def records(prefix: str) -> list[dict[str, Any]]:
        return [json.loads(x) for u in storage.list_uris(prefix) if u.rsplit("/", 1)[-1].startswith("part-")
                for x in storage.iter_lines(u) if x.strip()]

    rejects = records(layout.rejects_dir)
    outputs = [r for s in range(4) for r in records(layout.outputs_dir(s))]
    errors = [json.loads(x) for s in range(4) for x in storage.iter_lines(layout.errors_file(s)) if x.strip()]
    places = Counter(r["row_index"] for r in rejects + outputs + errors)
    assert sorted(places) == list(range(total)) and set(places.values()) == {1}
    assert Counter(r["rule"] for r in rejects) == expected_rejects
    assert all(c == 1 for c in Counter(r["id"] for r in outputs + errors).values())
    manifest = storage.read_json(layout.manifest)
    counts = manifest["counts"]
    assert counts["input"] == total == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["generated"] + counts["errored"] == len(outputs) + len(errors)
    assert counts["items_lost"] == 0 and counts["items_duplicated"] == 0
    (broken,) = [r for r in rejects if r["rule"] == "parse_error" and "part-20.jsonl.gz line" in r["reason"]]
    assert "broken JSON" in broken["reason"]
    check_against_contract(layout.root)
