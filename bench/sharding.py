"""Sharding balance on heavy-tailed inputs: the genbatch plan against round-robin and hash sharding.

``python -m bench.sharding [--configs 20000x8,20000x32,5000x128] [--seeds 5]``

Items get prompt lengths from a Pareto distribution (alpha 1.2, the heavy tail of real catalogs:
most prompts short, a few very long) and per-item ``max_new_tokens`` of 16/48/128; the cost is
``genbatch.run.items.estimate_cost`` (prompt tokens + max_new_tokens). Each plan is scored by its
makespan, the cost of the most loaded shard (an exact proxy of the wall time of the slowest
generate task), as ratios:

* ``vs_mean``: makespan / (total cost / shards), the issue's figure (target ≤ 1.05);
* ``vs_bound``: makespan / max(total / shards, largest item), DESIGN's figure (1.0 is optimal).

Plans: ``genbatch`` is ``beam_jobs.plan.build_plan`` itself (LPT on the fixed-size records the
pipeline writes); ``round_robin`` deals items in input order; ``hash`` puts an item in
``sha256(id) % shards`` (what a keyed shuffle does); ``sorted_contiguous`` cuts the length-sorted
list into equal-count ranges (the mistake DESIGN warns about). One process pinned to one core;
per seed the plans run back to back on the same items; the printed figure is the median over
seeds with min/max. One JSON line per (items × shards) configuration. Where the largest item
outweighs the mean load (few items per shard), no plan can reach ``vs_mean`` 1.05; ``pass``
then judges ``vs_bound`` instead (and says which).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from beam_jobs import plan as planning
from beam_jobs.records import id_digest
from genbatch.run.items import estimate_cost

TARGET_VS_MEAN = 1.05
Item = tuple[str, float]


def items_for(seed: int, n: int) -> list[Item]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens = min(int(8 * rng.paretovariate(1.2)), 8000)
        max_new = rng.choice((16, 48, 128))
        cost = estimate_cost("text", prompt_tokens=tokens, max_new_tokens=max_new, steps=1, height=8, width=8)
        out.append((f"sku-{seed}-{i:07d}", cost))
    return out


def genbatch_plan(items: list[Item], shards: int) -> list[int]:
    records = np.zeros(len(items), dtype=planning.record_dtype(False))
    for index, (ident, cost) in enumerate(items):
        records[index] = (index, *id_digest(ident), 0, cost, 0)
    plan, _ = planning.build_plan(records, shards, False)
    return [plan.route_of(i) for i in range(len(items))]


def round_robin(items: list[Item], shards: int) -> list[int]:
    return [i % shards for i in range(len(items))]


def hashed(items: list[Item], shards: int) -> list[int]:
    return [int.from_bytes(hashlib.sha256(ident.encode()).digest()[:8], "big") % shards for ident, _ in items]


def sorted_contiguous(items: list[Item], shards: int) -> list[int]:
    order = sorted(range(len(items)), key=lambda i: items[i][1])
    out = [0] * len(items)
    for rank, i in enumerate(order):
        out[i] = min(rank * shards // len(items), shards - 1)
    return out


PLANS: dict[str, Callable[[list[Item], int], list[int]]] = {
    "genbatch": genbatch_plan,
    "round_robin": round_robin,
    "hash": hashed,
    "sorted_contiguous": sorted_contiguous,
}


def score(items: list[Item], assignment: list[int], shards: int) -> dict[str, float]:
    loads = [0.0] * shards
    for (_, cost), shard in zip(items, assignment, strict=True):
        loads[shard] += cost
    total = sum(loads)
    largest = max(cost for _, cost in items)
    return {"vs_mean": max(loads) / (total / shards), "vs_bound": max(loads) / max(total / shards, largest)}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "max": round(max(values), 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sharding")
    parser.add_argument("--configs", default="20000x8,20000x32,5000x128", help="ITEMSxSHARDS,...")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    for config in args.configs.split(","):
        n_items, shards = (int(x) for x in config.lower().split("x"))
        scores: dict[str, dict[str, list[float]]] = {name: {"vs_mean": [], "vs_bound": []} for name in PLANS}
        seconds: list[float] = []
        for seed in range(args.seeds):
            items = items_for(seed, n_items)
            for name, plan in PLANS.items():
                start = time.perf_counter()
                assignment = plan(items, shards)
                if name == "genbatch":
                    seconds.append(time.perf_counter() - start)
                for key, value in score(items, assignment, shards).items():
                    scores[name][key].append(value)
        gb = statistics.median(scores["genbatch"]["vs_mean"])
        gb_bound = statistics.median(scores["genbatch"]["vs_bound"])
        tail_bound = gb_bound < gb  # the largest item, not the mean, limits the makespan
        line: dict[str, Any] = {
            "benchmark": "sharding_balance",
            "items": n_items,
            "shards": shards,
            "seeds": args.seeds,
            "lengths": "pareto(alpha=1.2) prompt tokens, max_new_tokens in {16,48,128}",
            "makespan_vs_mean": {name: _summary(s["vs_mean"]) for name, s in scores.items()},
            "makespan_vs_bound": {name: _summary(s["vs_bound"]) for name, s in scores.items()},
            "baseline_over_genbatch": {name: round(statistics.median(s["vs_mean"]) / gb, 3)
                                       for name, s in scores.items() if name != "genbatch"},
            "genbatch_plan_s": _summary(seconds),
            "target_vs_mean": TARGET_VS_MEAN,
            "judged_on": "vs_bound" if tail_bound else "vs_mean",
            "pass": (gb_bound if tail_bound else gb) <= TARGET_VS_MEAN,
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
