"""Canary / A-B within one batch run: per-arm metrics, their difference with a 95% CI, a verdict.

Items are routed by ``genbatch.run.items.canary_arm`` (a hash of the id), so the candidate share is
exact and reproducible; this module checks that routing from the outputs and compares the arms
on the per-item metric columns of ``quality/metrics.parquet``.
"""

from __future__ import annotations

from typing import Any

from genbatch.io import storage
from genbatch.quality.stats import bootstrap_diff, mean
from genbatch.run.items import canary_arm
from genbatch.run.records import error_files, iter_jsonl, iter_many, output_files
from genbatch.run.state import RunState


def canary_path(state: RunState) -> str:
    """Where the run's canary verdict is written (``quality/canary.json``); promotion reads it from there."""
    return state.layout.canary_verdict


def evaluate_canary(state: RunState, items: Any) -> dict[str, Any] | None:
    """``items``: the per-item metrics frame (one row per output, with ``id``). None without a canary."""
    if state.canary_model is None:
        return None
    canary = state.spec.canary
    accepted = [it["id"] for s in range(state.num_shards) for it in iter_jsonl(state.layout.shard_input(s, state.num_shards))]
    expected = {i: canary_arm(i, canary.fraction) for i in accepted}
    finished = list(iter_many(output_files(state.layout, state.num_shards))) + \
        list(iter_many(error_files(state.layout, state.num_shards)))
    misrouted = [r["id"] for r in finished if r.get("arm") != expected.get(r["id"])]
    arms = {r["id"]: r["arm"] for r in finished}
    rows = []
    records = items.to_dict(orient="records") if hasattr(items, "to_dict") else list(items)
    for column in canary.metrics:
        prod = [float(r[column]) for r in records if arms.get(r["id"]) == "production" and r.get(column) is not None]
        cand = [float(r[column]) for r in records if arms.get(r["id"]) == "candidate" and r.get(column) is not None]
        diff = mean(cand) - mean(prod)
        low, high = bootstrap_diff(prod, cand)
        rows.append({"metric": column, "production": mean(prod), "candidate": mean(cand), "difference": diff,
                     "ci95": [low, high], "n_production": len(prod), "n_candidate": len(cand),
                     "passed": bool(cand) and bool(prod) and diff >= -canary.tolerance})
    n_cand = sum(1 for a in expected.values() if a == "candidate")
    result = {
        "production_model": state.model.ref,
        "candidate_model": state.canary_model.ref,
        "fraction": canary.fraction,
        "items": {"production": len(expected) - n_cand, "candidate": n_cand,
                  "observed_fraction": n_cand / len(expected) if expected else 0.0},
        "misrouted": misrouted[:20],
        "rows": rows,
        "tolerance": canary.tolerance,
        "passed": not misrouted and all(r["passed"] for r in rows),
        "auto_promote": canary.auto_promote,
    }
    storage.write_json(canary_path(state), result, overwrite=True)
    return result
