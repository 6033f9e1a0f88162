"""Per-record logic of the preprocess pipeline, as plain functions so unit tests need no runner."""

from __future__ import annotations

import heapq
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from genbatch.items import derive_seed, estimate_cost, estimate_prompt_tokens

_SPACE = re.compile(r"[^\S\n]+")
CONTRACT_FIELDS = ("id", "prompt", "negative_prompt", "seed", "params")


@dataclass(frozen=True)
class PlanSettings:
    """What the per-record functions need from the spec (kept small so it pickles cheaply)."""

    task: str
    run_seed: int
    max_new_tokens: int
    steps: int


def normalise_text(text: str) -> str:
    """NFC, one newline style, collapsed spaces: equal prompts must look equal to the model.

    Newlines are kept: prompt templates use them as structure (``...\ndescription:``).
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(_SPACE.sub(" ", line).strip() for line in text.split("\n")).strip()


def to_item(accepted: dict[str, Any], settings: PlanSettings) -> dict[str, Any]:
    """Turn an accepted input row into a shard item with seed and cost estimate."""
    row = accepted["row"]
    prompt = normalise_text(row["prompt"])
    negative = row.get("negative_prompt")
    params = dict(row.get("params") or {})
    item_id = row["id"]
    seed = row.get("seed")
    tokens = estimate_prompt_tokens(prompt)
    max_new = int(params.get("max_new_tokens", settings.max_new_tokens))
    steps = int(params.get("num_inference_steps", settings.steps))
    return {
        "id": item_id,
        "row_index": accepted["index"],
        "prompt": prompt,
        "negative_prompt": normalise_text(negative) if isinstance(negative, str) else None,
        "seed": int(seed) if seed is not None else derive_seed(settings.run_seed, item_id),
        "params": params,
        "est_tokens": tokens,
        "est_cost": estimate_cost(settings.task, tokens, max_new, steps),
        **{k: v for k, v in row.items() if k not in CONTRACT_FIELDS},
    }


def split_duplicates(item_id: str, items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Keep the first occurrence (lowest row index) of an id; the rest become rejects."""
    ordered = sorted(items, key=lambda it: it["row_index"])
    keep, dupes = ordered[0], ordered[1:]
    rejects = [
        {
            "id": item_id,
            "index": d["row_index"],
            "rule": "duplicate_id",
            "reason": f"id {item_id!r} already used by row {keep['row_index']}; ids must be unique — "
            "rename or drop the duplicate row",
            "row": {k: v for k, v in d.items() if k not in {"est_tokens", "est_cost", "row_index"}},
        }
        for d in dupes
    ]
    return keep, rejects


def lpt_assignment(costs: list[tuple[str, float]], num_shards: int) -> dict[str, int]:
    """Longest-processing-time first: each item, costliest first, to the least loaded shard.

    Ties break by id and shard number so the plan is deterministic across runs and retries.
    """
    heap = [(0.0, shard) for shard in range(num_shards)]
    assignment: dict[str, int] = {}
    for item_id, cost in sorted(costs, key=lambda c: (-c[1], c[0])):
        load, shard = heapq.heappop(heap)
        assignment[item_id] = shard
        heapq.heappush(heap, (load + cost, shard))
    return assignment


def shard_lines(items: list[dict[str, Any]]) -> bytes:
    """Shard file content: sorted by length *inside* the shard (stable by id) to cut padding."""
    ordered = sorted(items, key=lambda it: (it["est_tokens"], it["id"]))
    return "".join(json.dumps(it, sort_keys=True, ensure_ascii=False) + "\n" for it in ordered).encode()
