"""The real Beam preprocess pipeline (in-process FnApiRunner) on a prepared run directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from beam_jobs.preprocess import run
from tests.helpers import prepared_run

pytestmark = pytest.mark.integration


def _accepted(n: int, duplicates: int) -> list[dict]:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        words = int(3 + rng.paretovariate(1.2) * 4)
        rows.append({"index": i, "row": {"id": f"id-{i:04d}", "prompt": " ".join(["w"] * min(words, 400)),
                                          "params": {"max_new_tokens": 8 + (i % 3) * 40}, "category": "c"}})
    for j in range(duplicates):
        rows.append({"index": n + j, "row": {"id": f"id-{j:04d}", "prompt": "again"}})
    return rows


def test_pipeline_dedupes_and_cuts_balanced_sorted_shards(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), num_shards=4)
    accepted = Path(state.layout.validation_accepted)
    accepted.parent.mkdir(parents=True)
    accepted.write_text("".join(json.dumps(r) + "\n" for r in _accepted(300, duplicates=3)))

    plan = run(["--run-dir", state.layout.root])

    assert plan["items"] == 300 and plan["num_shards"] == 4
    assert plan["makespan_ratio"] <= 1.05, plan
    seen: list[str] = []
    for shard in range(4):
        lines = Path(state.layout.shard_input(shard, 4)).read_text().splitlines()
        items = [json.loads(x) for x in lines]
        assert [it["est_tokens"] for it in items] == sorted(it["est_tokens"] for it in items)
        assert all("seed" in it and "row_index" in it and it["category"] == "c" for it in items)
        seen += [it["id"] for it in items]
    assert len(seen) == len(set(seen)) == 300
    rejects = [json.loads(x) for x in Path(state.layout.rejects_part("preprocess")).read_text().splitlines()]
    assert [r["row_index"] for r in rejects] == [300, 301, 302]
    assert {r["rule"] for r in rejects} == {"duplicate_id"}

    # A retried task rewrites byte-identical objects: create-only writes succeed, nothing changes.
    before = {p: p.read_bytes() for p in Path(state.layout.shards_dir).glob("shard-*.jsonl")}
    assert run(["--run-dir", state.layout.root])["items"] == 300
    assert {p: p.read_bytes() for p in before} == before


def test_more_shards_than_items_gives_empty_shard_files(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path), num_shards=3)
    accepted = Path(state.layout.validation_accepted)
    accepted.parent.mkdir(parents=True)
    accepted.write_text(json.dumps({"index": 0, "row": {"id": "only", "prompt": "p"}}) + "\n")
    plan = run(["--run-dir", state.layout.root])
    assert sorted(s["items"] for s in plan["shards"]) == [0, 0, 1]
    assert all(Path(state.layout.shard_input(s, 3)).exists() for s in range(3))
