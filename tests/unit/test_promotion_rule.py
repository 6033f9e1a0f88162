"""Promotion decides on the bootstrap CI, not the mean: a candidate passes a metric only when, at 95%
confidence, it is no worse than production by more than the tolerance (models.promotion.compare)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from models.promotion import MetricRule, Policy, compare, evidence_table

N = 200


def _arm(version: int, scores: list[float], ids: list[str] | None = None) -> dict[str, Any]:
    items: dict[str, list[Any]] = {"quality": list(scores)}
    if ids is not None:
        items["id"] = ids
    return {"version": version, "items": items, "throughput": 10.0}


def _policy(tolerance: float = 0.02, higher_is_better: bool = True) -> Policy:
    return Policy(golden_set="unused", spec={}, metrics=[MetricRule("quality", higher_is_better, tolerance)])


def _row(evidence: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in evidence["rows"] if r["metric"] == "quality")


def test_a_mean_within_tolerance_but_a_ci_beyond_it_is_rejected() -> None:
    production = [0.5] * N
    candidate = [0.49 + (0.3 if i % 2 else -0.3) for i in range(N)]  # 0.01 worse on average, very noisy
    row = _row(evidence := compare(_arm(1, production), _arm(2, candidate), _policy()))
    assert row["difference"] == pytest.approx(-0.01) and -row["difference"] <= 0.02  # the mean alone would pass ...
    assert row["worst_case"] > 0.02 and row["ci95"][0] < -0.02, row  # ... the CI does not
    assert row["passed"] is False and evidence["passed"] is False
    assert "FAIL" in evidence_table(evidence)


def test_an_equal_candidate_passes_and_the_pairing_by_id_narrows_the_ci() -> None:
    rng = random.Random(5)
    ids = [f"g-{i}" for i in range(N)]
    production = [float(rng.random() < 0.5) for _ in range(N)]  # a binary metric, 0/1 per item
    candidate = list(production)
    candidate[0] = 1.0 - candidate[0]  # one item of 200 changed
    paired = _row(compare(_arm(1, production, ids), _arm(2, candidate, ids), _policy()))
    unpaired = _row(compare(_arm(1, production), _arm(2, candidate), _policy()))
    assert paired["ci_method"].startswith("paired") and unpaired["ci_method"] == "independent bootstrap"
    assert paired["passed"] is True and paired["worst_case"] <= 0.02, paired
    # Without the pairing the item-to-item spread swamps the tolerance and the same candidate fails.
    assert unpaired["passed"] is False and unpaired["worst_case"] > 0.05, unpaired


def test_a_clearly_worse_candidate_fails_and_lower_is_better_uses_the_upper_bound() -> None:
    ids = [f"g-{i}" for i in range(N)]
    production = [0.0] * N
    worse = [0.1] * N  # +0.1 on a lower-is-better metric
    row = _row(compare(_arm(1, production, ids), _arm(2, worse, ids), _policy(0.02, higher_is_better=False)))
    assert row["ci95"] == pytest.approx([0.1, 0.1]) and row["worst_case"] == pytest.approx(0.1)
    assert row["passed"] is False
    better = [-0.1] * N
    row = _row(compare(_arm(1, production, ids), _arm(2, better, ids), _policy(0.02, higher_is_better=False)))
    assert row["worst_case"] == pytest.approx(-0.1) and row["passed"] is True


def test_an_empty_arm_fails() -> None:
    row = _row(compare(_arm(1, [0.5] * N), _arm(2, []), _policy()))
    assert row["passed"] is False


def test_a_candidate_under_the_throughput_floor_fails_on_throughput_alone() -> None:
    ids = [f"g-{i}" for i in range(N)]
    scores = [1.0] * N
    policy = Policy(golden_set="unused", spec={}, metrics=[MetricRule("quality", True, 0.02)], throughput_floor=0.5)
    production = _arm(1, scores, ids)
    for candidate_throughput, passes in [(4.9, False), (5.0, True), (12.0, True)]:  # production: 10 items/s
        evidence = compare(production, {**_arm(2, scores, ids), "throughput": candidate_throughput}, policy)
        row = next(r for r in evidence["rows"] if r["metric"] == "throughput_items_per_s")
        assert row["ratio"] == pytest.approx(candidate_throughput / 10.0) and row["passed"] is passes
        assert _row(evidence)["passed"] is True and evidence["passed"] is passes
