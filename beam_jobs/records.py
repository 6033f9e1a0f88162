"""Per-record logic of the preprocess pipeline, as plain functions so unit tests need no runner."""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from genbatch.run.items import derive_seed, estimate_cost, estimate_prompt_tokens

_SPACE = re.compile(r"[^\S\n]+")
CONTRACT_FIELDS = ("id", "prompt", "messages", "negative_prompt", "seed", "params")

RULE_DUPLICATE_ID = "duplicate_id"
RULE_TOKEN_BUDGET = "prompt_over_token_budget"
PREPROCESS_RULES: tuple[str, ...] = (RULE_TOKEN_BUDGET, RULE_DUPLICATE_ID)
"""Reject rules of this stage, in the order they apply (validation's rules ran before)."""

KEY_SEPARATOR = "\t"
"""Separates the sort key from the JSON record in run files; JSON never holds a raw tab."""


@dataclass(frozen=True)
class PlanSettings:
    """What the per-record functions need from the spec (kept small so it pickles cheaply)."""

    task: str
    run_seed: int
    max_new_tokens: int
    steps: int
    height: int = 64
    width: int = 64
    dedupe_identical: bool = False


def normalise_text(text: str) -> str:
    """NFC, one newline style, collapsed spaces: equal prompts must look equal to the model.

    Newlines are kept: prompt templates use them as structure (``...\ndescription:``).
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(_SPACE.sub(" ", line).strip() for line in text.split("\n")).strip()


def jsonl_line(record: dict[str, Any]) -> str:
    """The one JSON encoding of a record line (sorted keys, UTF-8), without the newline."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def normalised_prompt(row: dict[str, Any]) -> str:
    return normalise_text(row["prompt"])


def normalised_messages(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """Chat messages with each content normalised as a prompt is (validation checked their shape)."""
    messages = row.get("messages")
    if not messages:
        return None
    return [{"role": m["role"], "content": normalise_text(m["content"])} for m in messages]


def row_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """The columns that pass through as metadata (everything but the contract fields)."""
    return {k: v for k, v in row.items() if k not in CONTRACT_FIELDS}


def item_params(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row.get("params") or {})


def max_new_tokens_of(params: dict[str, Any], settings: PlanSettings) -> int:
    return int(params.get("max_new_tokens", settings.max_new_tokens))


def item_seed(row: dict[str, Any], settings: PlanSettings) -> int:
    seed = row.get("seed")
    return int(seed) if seed is not None else derive_seed(settings.run_seed, row["id"])


def item_cost(settings: PlanSettings, tokens: int, params: dict[str, Any]) -> float:
    """Cost of one item with its per-item overrides (see :func:`genbatch.run.items.estimate_cost`)."""
    return estimate_cost(
        settings.task,
        prompt_tokens=tokens,
        max_new_tokens=max_new_tokens_of(params, settings),
        steps=int(params.get("num_inference_steps", settings.steps)),
        height=int(params.get("height", settings.height)),
        width=int(params.get("width", settings.width)),
    )


def to_item(accepted: dict[str, Any], settings: PlanSettings, tokens: int | None = None) -> dict[str, Any]:
    """Turn an accepted input row into a shard item with seed and cost estimate.

    ``tokens`` is the prompt length counted with the model's tokenizer; without it the cheap
    character estimate is used.
    """
    row = accepted["row"]
    prompt = normalised_prompt(row)
    negative = row.get("negative_prompt")
    params = item_params(row)
    if tokens is None:
        tokens = estimate_prompt_tokens(prompt)
    return {
        "id": row["id"],
        "row_index": accepted["index"],
        "prompt": prompt,
        "negative_prompt": normalise_text(negative) if isinstance(negative, str) else None,
        "seed": item_seed(row, settings),
        "params": params,
        **({"messages": messages} if (messages := normalised_messages(row)) else {}),
        "est_tokens": tokens,
        "est_cost": item_cost(settings, tokens, params),
        **row_metadata(row),
    }


# --- identity ---------------------------------------------------------------------------------


def _digest128(data: bytes) -> tuple[int, int]:
    raw = hashlib.blake2b(data, digest_size=16).digest()
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")


def id_digest(item_id: str) -> tuple[int, int]:
    """128-bit digest of an id, as two unsigned 64-bit halves.

    The plan dedupes ids by digest so that only fixed-size records reach the single worker that
    builds it; two different ids share a digest with probability about n²/2¹²⁹ (nil in practice).
    """
    return _digest128(item_id.encode("utf-8", "surrogatepass"))


def content_digest(row: dict[str, Any], settings: PlanSettings) -> tuple[int, int]:
    """Digest of what decides an item's output besides the run: (prompt, negative, params, seed).

    Prompts are compared after normalisation; params as given (not merged with run defaults).
    """
    negative = row.get("negative_prompt")
    payload = [
        normalised_messages(row) or normalised_prompt(row),
        normalise_text(negative) if isinstance(negative, str) else None,
        item_params(row),
        item_seed(row, settings),
    ]
    return _digest128(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))


# --- rejects ----------------------------------------------------------------------------------


def reject_record(accepted: dict[str, Any], rule: str, reason: str) -> dict[str, Any]:
    """A ``rejects/part-*.jsonl`` record, shaped like validation's: the raw row and the rule.

    ``accepted`` is a ``validation/accepted.jsonl`` line (``{"index", "row", "source"}``, internal); the
    record names the row number ``row_index``, as every record a consumer reads does, and where the row is
    in the user's input (``source``: file and line) when validation recorded it.
    """
    row = accepted["row"]
    ident = row.get("id")
    source = accepted.get("source")
    return {
        "id": ident if isinstance(ident, str) else None,
        "row_index": accepted["index"],
        "rule": rule,
        "reason": reason,
        "row": row,
        **({"source": source} if source is not None else {}),
    }


def budget_reject(accepted: dict[str, Any], tokens: int, budget: int, context: int, max_new: int) -> dict[str, Any]:
    if budget <= 0:  # no prompt fits: the row's max_new_tokens is what to change, not the prompt
        fix = (f"lower max_new_tokens to at most {context - tokens}" if context > tokens
               else "shorten the prompt and lower max_new_tokens")
        reason = (f"max_new_tokens {max_new} leaves no room for a prompt in the model's context of {context} "
                  f"tokens (this prompt is {tokens}); {fix}")
    else:
        reason = (f"prompt is {tokens} tokens, over the budget of {budget} (model context {context} minus "
                  f"max_new_tokens {max_new}); shorten the prompt or lower max_new_tokens")
    return reject_record(accepted, RULE_TOKEN_BUDGET, reason)


def duplicate_reject(accepted: dict[str, Any], kept_index: int) -> dict[str, Any]:
    item_id = accepted["row"]["id"]
    return reject_record(
        accepted,
        RULE_DUPLICATE_ID,
        f"id {item_id!r} already used by row {kept_index}; ids must be unique — rename or drop the duplicate row",
    )


def split_duplicates(item_id: str, items: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Keep the first occurrence (lowest row index) of an id; the rest become rejects.

    The reference semantics of the pipeline's digest-based dedupe (used by tests and small inputs).
    """
    ordered = sorted(items, key=lambda it: it["row_index"])
    keep, dupes = ordered[0], ordered[1:]
    rejects = [
        duplicate_reject({"index": d["row_index"], "row": {**{k: v for k, v in d.items() if k not in
                          {"est_tokens", "est_cost", "row_index"}}, "id": item_id}}, keep["row_index"])
        for d in dupes
    ]
    return keep, rejects


# --- shard plan -------------------------------------------------------------------------------


class LptState:
    """Longest-processing-time first, fed in chunks: each item to the least loaded shard.

    Items must arrive costliest first; ties of load break by shard number, so the assignment
    depends only on the order it is fed (which the caller makes deterministic).
    """

    def __init__(self, num_shards: int) -> None:
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.heap: list[tuple[float, int]] = [(0.0, shard) for shard in range(num_shards)]

    def assign(self, costs: Iterable[float]) -> list[int]:
        heap = self.heap
        out: list[int] = []
        for cost in costs:
            load, shard = heap[0]
            heapq.heapreplace(heap, (load + cost, shard))
            out.append(shard)
        return out


def lpt_assignment(costs: Sequence[tuple[str, float]], num_shards: int) -> dict[str, int]:
    """LPT over (id, cost) pairs, costliest first, ties by id: deterministic across runs and retries."""
    ordered = sorted(costs, key=lambda c: (-c[1], c[0]))
    shards = LptState(num_shards).assign(c for _, c in ordered)
    return {item_id: shard for (item_id, _), shard in zip(ordered, shards, strict=True)}


# --- sorted output ----------------------------------------------------------------------------


def _key_text(text: str) -> str:
    """An id inside a sort key: JSON-escaped, so no raw tab or newline can break the framing."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def shard_sort_key(item: dict[str, Any]) -> str:
    """Order inside a shard: by token length, then id (string order equals (est_tokens, id) order)."""
    return f"{int(item['est_tokens']):010d} {_key_text(item['id'])}"


def index_sort_key(index: int) -> str:
    """Order of rejects and fan-out records: by input row index."""
    return f"{int(index):012d}"


def keyed_line(key: str, record: dict[str, Any]) -> str:
    return key + KEY_SEPARATOR + jsonl_line(record)


def shard_lines(items: list[dict[str, Any]]) -> bytes:
    """Shard file content: sorted by length *inside* the shard (stable by id) to cut padding.

    The in-memory reference of what the pipeline's external merge writes, byte for byte.
    """
    keyed = sorted(keyed_line(shard_sort_key(it), it) for it in items)
    return "".join(line.split(KEY_SEPARATOR, 1)[1] + "\n" for line in keyed).encode()
