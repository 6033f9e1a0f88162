"""Per-record logic of the Beam preprocess stage (the pipeline itself runs in tests/integration)."""

from __future__ import annotations

import random

from beam_jobs.records import PlanSettings, lpt_assignment, normalise_text, split_duplicates, to_item
from genbatch.items import derive_seed

SETTINGS = PlanSettings(task="text", run_seed=7, max_new_tokens=40, steps=8)


def test_normalise_collapses_whitespace_and_composes_unicode() -> None:
    assert normalise_text("  Cafe\u0301 \t  bag  ") == "Caf\u00e9 bag"
    assert normalise_text("colour: red  \r\ndescription:") == "colour: red\ndescription:"


def test_item_seed_is_own_seed_else_derived_from_run_seed_and_id() -> None:
    with_seed = to_item({"index": 0, "row": {"id": "a", "prompt": "p", "seed": 5}}, SETTINGS)
    derived = to_item({"index": 1, "row": {"id": "b", "prompt": "p"}}, SETTINGS)
    assert with_seed["seed"] == 5
    assert derived["seed"] == derive_seed(7, "b") != derive_seed(8, "b")
    assert 0 <= derived["seed"] < 2**63


def test_passthrough_columns_survive_and_contract_fields_are_typed() -> None:
    item = to_item({"index": 3, "row": {"id": "a", "prompt": "x y", "attributes": {"colour": "red"}}}, SETTINGS)
    assert item["attributes"] == {"colour": "red"}
    assert item["row_index"] == 3 and item["params"] == {} and item["negative_prompt"] is None
    assert item["est_cost"] > 40


def test_duplicates_keep_the_first_row_and_reject_the_rest_with_the_rule() -> None:
    items = [to_item({"index": i, "row": {"id": "dup", "prompt": f"p{i}"}}, SETTINGS) for i in (9, 2, 5)]
    keep, rejects = split_duplicates("dup", items)
    assert keep["row_index"] == 2
    assert sorted(r["index"] for r in rejects) == [5, 9]
    assert all(r["rule"] == "duplicate_id" and "row 2" in r["reason"] for r in rejects)


def _makespan_ratio(costs: list[tuple[str, float]], assignment: dict[str, int], shards: int) -> float:
    loads = [0.0] * shards
    for item_id, cost in costs:
        loads[assignment[item_id]] += cost
    total = sum(c for _, c in costs)
    return max(loads) / max(total / shards, max(c for _, c in costs))


def test_lpt_balances_a_heavy_tailed_input_far_better_than_sorted_contiguous_splits() -> None:
    rng = random.Random(0)
    costs = [(f"id{i}", 10 + rng.paretovariate(1.3) * 20) for i in range(2000)]
    lpt = _makespan_ratio(costs, lpt_assignment(costs, 8), 8)
    ordered = sorted(costs, key=lambda c: c[1])
    contiguous = {cid: min(i * 8 // len(ordered), 7) for i, (cid, _) in enumerate(ordered)}
    naive = _makespan_ratio(costs, contiguous, 8)
    assert lpt <= 1.05, lpt
    assert naive > 2 * lpt, (naive, lpt)


def test_lpt_is_deterministic_and_uses_every_shard() -> None:
    costs = [(f"id{i}", float(i % 5 + 1)) for i in range(100)]
    assert lpt_assignment(costs, 4) == lpt_assignment(list(reversed(costs)), 4)
    assert set(lpt_assignment(costs, 4).values()) == {0, 1, 2, 3}
