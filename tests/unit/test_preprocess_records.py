"""Per-record logic of the Beam preprocess stage (the pipeline itself runs in tests/integration)."""

from __future__ import annotations

import random

import pytest

from beam_jobs.records import (
    KEY_SEPARATOR,
    PlanSettings,
    budget_reject,
    content_digest,
    id_digest,
    item_cost,
    keyed_line,
    lpt_assignment,
    normalise_text,
    shard_lines,
    shard_sort_key,
    split_duplicates,
    to_item,
)
from genbatch.run.items import derive_seed, estimate_cost

SETTINGS = PlanSettings(task="text", run_seed=7, max_new_tokens=40, steps=8)
IMAGE = PlanSettings(task="image", run_seed=7, max_new_tokens=40, steps=8, height=64, width=32)


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


# --- cost: genbatch.run.items.estimate_cost is the one definition -----------------------------------


def test_text_cost_is_prompt_tokens_plus_max_new_tokens() -> None:
    assert estimate_cost("text", prompt_tokens=30, max_new_tokens=48, steps=8, height=64, width=64) == 78.0
    assert estimate_cost("text", prompt_tokens=0, max_new_tokens=1, steps=99, height=8, width=8) == 1.0


def test_image_cost_is_steps_times_pixels_whatever_the_prompt() -> None:
    assert estimate_cost("image", prompt_tokens=5, max_new_tokens=48, steps=8, height=64, width=32) == 8 * 64 * 32
    assert estimate_cost("image", prompt_tokens=500, max_new_tokens=1, steps=8, height=64, width=32) == 8 * 64 * 32


def test_item_cost_applies_per_item_overrides() -> None:
    assert item_cost(SETTINGS, 10, {}) == 50.0
    assert item_cost(SETTINGS, 10, {"max_new_tokens": 100}) == 110.0
    assert item_cost(IMAGE, 3, {}) == 8 * 64 * 32
    assert item_cost(IMAGE, 3, {"num_inference_steps": 4, "height": 128, "width": 128}) == 4 * 128 * 128


def test_to_item_uses_the_given_token_count_over_the_estimate() -> None:
    accepted = {"index": 0, "row": {"id": "a", "prompt": "a fairly long prompt of many characters"}}
    assert to_item(accepted, SETTINGS, tokens=3)["est_tokens"] == 3
    assert to_item(accepted, SETTINGS, tokens=3)["est_cost"] == 43.0
    assert to_item(accepted, SETTINGS)["est_tokens"] == 10  # 39 characters / 4, rounded up


# --- identity and rejects ---------------------------------------------------------------------------


def test_id_digest_is_stable_and_128_bits() -> None:
    hi, lo = id_digest("sku-1")
    assert (hi, lo) == id_digest("sku-1") != id_digest("sku-2")
    assert 0 <= hi < 2**64 and 0 <= lo < 2**64


def test_content_digest_ignores_id_and_metadata_but_not_seed_params_or_prompt() -> None:
    base = {"id": "a", "prompt": "red  scarf", "seed": 1, "params": {"temperature": 0.5}}
    same = {"id": "b", "prompt": "red scarf", "seed": 1, "params": {"temperature": 0.5}, "category": "x"}
    assert content_digest(base, SETTINGS) == content_digest(same, SETTINGS)
    assert content_digest(base, SETTINGS) != content_digest({**base, "seed": 2}, SETTINGS)
    assert content_digest(base, SETTINGS) != content_digest({**base, "params": {}}, SETTINGS)
    assert content_digest(base, SETTINGS) != content_digest({**base, "negative_prompt": "blur"}, SETTINGS)
    # Without an explicit seed, the seed derives from the id: different ids are never identical.
    assert content_digest({"id": "a", "prompt": "p"}, SETTINGS) != content_digest({"id": "b", "prompt": "p"}, SETTINGS)


def test_duplicates_keep_the_first_row_and_reject_the_rest_with_the_rule() -> None:
    items = [to_item({"index": i, "row": {"id": "dup", "prompt": f"p{i}"}}, SETTINGS) for i in (9, 2, 5)]
    keep, rejects = split_duplicates("dup", items)
    assert keep["row_index"] == 2
    assert sorted(r["row_index"] for r in rejects) == [5, 9]
    assert all(r["rule"] == "duplicate_id" and "row 2" in r["reason"] for r in rejects)


# --- LPT ------------------------------------------------------------------------------------------


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


def test_lpt_refuses_zero_shards() -> None:
    with pytest.raises(ValueError, match="num_shards"):
        lpt_assignment([("a", 1.0)], 0)


# --- order inside a shard -------------------------------------------------------------------------


def test_keyed_lines_sort_like_est_tokens_then_id() -> None:
    items = [{"id": i, "est_tokens": t} for i, t in [("b", 3), ("a", 3), ("a-2", 3), ("z", 1), ("c", 12)]]
    keyed = sorted(keyed_line(shard_sort_key(it), it) for it in items)
    ids = [line.split(KEY_SEPARATOR, 1)[1] for line in keyed]
    expected = sorted(items, key=lambda it: (it["est_tokens"], it["id"]))
    assert [f'"id": "{it["id"]}"' in line for it, line in zip(expected, ids, strict=True)] == [True] * 5
    assert shard_lines(items).decode().splitlines()[0].startswith('{"est_tokens": 1, "id": "z"}')


def test_a_budget_reject_says_what_to_change() -> None:
    accepted = {"row": {"id": "a", "prompt": "p"}, "index": 4}
    over = budget_reject(accepted, 200, 88, 128, 40)["reason"]
    assert over == ("prompt is 200 tokens, over the budget of 88 (model context 128 minus max_new_tokens 40); "
                    "shorten the prompt or lower max_new_tokens")
    # a per-row max_new_tokens at or over the context: no budget left, and no negative budget in the message
    none_left = budget_reject(accepted, 20, 128 - 1000, 128, 1000)["reason"]
    assert none_left == ("max_new_tokens 1000 leaves no room for a prompt in the model's context of 128 tokens "
                         "(this prompt is 20); lower max_new_tokens to at most 108")
    assert "shorten the prompt and lower max_new_tokens" in budget_reject(accepted, 300, -872, 128, 1000)["reason"]
