"""The shard plan (numpy, fixed-size records) and the bounded-memory sorted-file sink, without a runner."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np

from beam_jobs import plan as planning
from beam_jobs.records import PlanSettings, content_digest, id_digest, keyed_line, lpt_assignment, shard_lines, shard_sort_key
from beam_jobs.sorted_files import SpillSortedRuns, delete_prefix, merge_runs

SETTINGS = PlanSettings(task="text", run_seed=3, max_new_tokens=8, steps=4)


def _records(rows: list[tuple[int, str, int, float]], with_content: bool = False,
             contents: dict[int, tuple[int, int]] | None = None) -> np.ndarray:
    recs = np.zeros(len(rows), dtype=planning.record_dtype(with_content))
    for k, (index, ident, tokens, cost) in enumerate(rows):
        values: tuple = (index, *id_digest(ident), tokens, cost, 0)
        if with_content:
            values += (contents or {}).get(index, (index, index))
        recs[k] = values
    return recs


def test_first_row_of_an_id_wins_whatever_the_record_order() -> None:
    rows = [(7, "a", 5, 10.0), (2, "a", 6, 11.0), (4, "b", 1, 3.0), (9, "a", 2, 4.0), (1, "c", 1, 1.0)]
    for seed in range(5):
        random.Random(seed).shuffle(rows)
        plan, stats = planning.build_plan(_records(rows), 2, False)
        assert [plan.route_of(i) >= 0 for i in (1, 2, 4)] == [True, True, True]
        assert [plan.route_of(i) for i in (7, 9)] == [planning.DUPLICATE] * 2
        assert plan.kept_row(7) == plan.kept_row(9) == 2
        assert plan.route_of(3) == plan.route_of(100) == planning.NOT_ROUTED
        assert plan.tokens_of(2) == 6
        assert stats["items"] == 3 and stats["duplicate_ids"] == 2 and stats["rows_planned"] == 5
        assert stats["est_cost_total"] == 15.0


def test_plan_is_independent_of_record_order_and_matches_reference_lpt() -> None:
    rng = random.Random(1)
    rows = [(i, f"id-{i:05d}", 1, float(int(8 + rng.paretovariate(1.2) * 10))) for i in range(3000)]
    plan, stats = planning.build_plan(_records(rows), 8, False)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    again, stats2 = planning.build_plan(_records(shuffled), 8, False)
    assert np.array_equal(plan.route, again.route) and stats == stats2
    assert stats["makespan_ratio"] <= 1.05
    # Same greedy as the id-keyed reference when ties break the same way (here: ids ordered like rows).
    reference = lpt_assignment([(f"id-{i:05d}", c) for i, _, _, c in rows], 8)
    assert all(plan.route_of(i) == reference[f"id-{i:05d}"] for i in range(3000))
    loads = [0.0] * 8
    for i, _, _, cost in rows:
        loads[plan.route_of(i)] += cost
    assert [s["est_cost"] for s in stats["shards"]] == loads


def test_identical_items_fan_out_to_the_first_row() -> None:
    same = content_digest({"id": "x", "prompt": "p", "seed": 1}, SETTINGS)
    rows = [(0, "a", 1, 5.0), (1, "b", 1, 5.0), (2, "c", 1, 5.0), (3, "b", 1, 5.0)]
    plan, stats = planning.build_plan(_records(rows, True, {1: same, 2: same, 3: same}), 2, True)
    assert plan.route_of(1) >= 0 and plan.route_of(0) >= 0
    assert plan.route_of(2) == planning.FANOUT and plan.kept_row(2) == 1
    assert plan.route_of(3) == planning.DUPLICATE and plan.kept_row(3) == 1  # ids dedupe first
    assert plan.is_canonical(1) and not plan.is_canonical(0)
    assert stats["items"] == 2 and stats["fanned_out"] == 1 and stats["duplicate_ids"] == 1


def test_empty_plan() -> None:
    plan, stats = planning.build_plan(_records([]), 3, False)
    assert stats["items"] == 0 and stats["makespan_ratio"] == 1.0 and len(stats["shards"]) == 3
    assert plan.route_of(0) == planning.NOT_ROUTED


def test_plan_and_records_round_trip_through_storage(tmp_path: Path) -> None:
    buffer = planning.RecordBuffer(str(tmp_path / "tmp"), False, chunk=2)
    files = [w for w in (buffer.add(i, id_digest(f"i{i}"), i, float(i)) for i in range(5)) if w]
    files.append(buffer.flush())
    assert [count for _, count in files] == [2, 2, 1]
    records = planning.load_records(files, False)
    assert sorted(records["index"].tolist()) == [0, 1, 2, 3, 4]
    plan, _ = planning.build_plan(records, 2, False)
    loaded = planning.Plan.from_bytes(plan.to_bytes())
    assert np.array_equal(loaded.route, plan.route) and np.array_equal(loaded.tokens, plan.tokens)


# --- sorted files -----------------------------------------------------------------------------------


def _spill(tmp: str, lines: list[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    fn = SpillSortedRuns(tmp, limit=limit)
    fn.start_bundle()
    out = [pair for element in lines for pair in fn.process(element)]
    return out + [wv.value for wv in fn.finish_bundle()]


def test_merged_file_is_byte_identical_whatever_the_runs(tmp_path: Path) -> None:
    rng = random.Random(5)
    items = [{"id": f"id-{i}", "est_tokens": rng.randint(1, 40), "prompt": "é" * rng.randint(0, 5)} for i in range(500)]
    expected = shard_lines(items)
    outputs = []
    for attempt, (limit, fanin) in enumerate([(10**9, 64), (2000, 64), (300, 3), (1, 2)]):
        shuffled = items[:]
        rng.shuffle(shuffled)
        # Several bundles, each spilling whenever its buffer passes `limit` characters.
        runs: list[str] = []
        for start in range(0, 500, 170):
            bundle = [("d", keyed_line(shard_sort_key(it), it)) for it in shuffled[start:start + 170]]
            pairs = _spill(str(tmp_path / "tmp"), bundle, limit)
            runs += [uri for _, uri in pairs]
        out = tmp_path / f"out-{attempt}.jsonl"
        stats = merge_runs(runs, str(out), fanin=fanin)
        assert stats["lines"] == 500 and stats["sha256"] == hashlib.sha256(expected).hexdigest()
        outputs.append(out.read_bytes())
    assert all(o == expected for o in outputs)
    assert [json.loads(x)["est_tokens"] for x in expected.decode().splitlines()] == sorted(it["est_tokens"] for it in items)
    # The merged output is create-only: merging the same runs again is an identical rewrite (success).
    merge_runs(runs, str(tmp_path / "out-3.jsonl"), fanin=2)
    assert delete_prefix(str(tmp_path / "tmp")) > 0 and not (tmp_path / "tmp").exists()
