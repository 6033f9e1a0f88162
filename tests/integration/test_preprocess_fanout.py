"""Optional dedupe of identical (prompt, params, seed) items: generated once, recorded for fan-out.

Behind ``sharding.dedupe_identical`` (off by default); publishing the copies is
tests/integration/test_preprocess_fanout_publish.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import beam_jobs.preprocess as preprocess
from tests.helpers import prepared_run

pytestmark = pytest.mark.integration

ROWS = [
    {"id": "a", "prompt": "red scarf", "seed": 1},
    {"id": "b", "prompt": "  red   scarf ", "seed": 1},  # identical to a after normalisation
    {"id": "c", "prompt": "red scarf", "seed": 2},  # another seed
    {"id": "d", "prompt": "red scarf"},  # derived seed: depends on the id, so never identical
    {"id": "b", "prompt": "red scarf", "seed": 1},  # duplicate id: ids dedupe first
    {"id": "f", "prompt": "red scarf", "seed": 1, "params": {"temperature": 0.5}},  # other params
    {"id": "g", "prompt": "red scarf", "seed": 1, "category": "x"},  # metadata does not matter
]


def _run(tmp_path: Path, dedupe: bool) -> tuple[Any, dict[str, Any]]:
    state = prepared_run(str(tmp_path), num_shards=2, sharding={"num_shards": 2, "dedupe_identical": dedupe})
    accepted = Path(state.layout.validation_accepted)
    accepted.parent.mkdir(parents=True)
    accepted.write_text("".join(json.dumps({"index": i, "row": r}) + "\n" for i, r in enumerate(ROWS)))
    return state, preprocess.run(["--run-dir", state.layout.root])


def _jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_identical_items_are_generated_once_and_recorded_for_fanout(tmp_path: Path) -> None:
    state, plan = _run(tmp_path, dedupe=True)
    layout = state.layout
    items = [it for s in range(2) for it in _jsonl(layout.shard_input(s, 2))]
    assert sorted(it["id"] for it in items) == ["a", "c", "d", "f"]
    fanout = _jsonl(layout.shard_fanout)
    shard_of_a = next(s for s in range(2) if any(it["id"] == "a" for it in _jsonl(layout.shard_input(s, 2))))
    assert fanout == [
        {"id": "b", "row_index": 1, "canonical_id": "a", "canonical_row_index": 0, "shard": shard_of_a,
         "metadata": {}},
        {"id": "g", "row_index": 6, "canonical_id": "a", "canonical_row_index": 0, "shard": shard_of_a,
         "metadata": {"category": "x"}},  # its own metadata, for its published copy
    ]
    rejects = _jsonl(layout.rejects_part("preprocess"))
    assert [(r["row_index"], r["rule"]) for r in rejects] == [(4, "duplicate_id")]
    assert plan["rows"] == {"accepted": 7, "sharded": 4, "rejected": 1, "fanned_out": 2}
    assert plan["dedupe_identical"] is True and plan["fanout"] == "_fanout.jsonl"
    placed = sorted([it["row_index"] for it in items] + [r["row_index"] for r in rejects] + [f["row_index"] for f in fanout])
    assert placed == list(range(len(ROWS)))  # every row exactly once


def test_off_by_default_nothing_is_fanned_out(tmp_path: Path) -> None:
    state, plan = _run(tmp_path, dedupe=False)
    assert plan["rows"]["fanned_out"] == 0 and plan["dedupe_identical"] is False and plan["fanout"] is None
    assert not Path(state.layout.shard_fanout).exists()
    assert plan["items"] == 6
