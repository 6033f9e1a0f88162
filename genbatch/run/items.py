"""Item-level contracts shared by the Beam stage and the worker: seeds and cost estimates."""

from __future__ import annotations

import hashlib

SEED_MODULUS = 2**63
# Keys of a shard item that are the contract itself; every other key is passthrough metadata.
ITEM_FIELDS = frozenset({"id", "prompt", "messages", "negative_prompt", "seed", "params", "row_index", "est_tokens", "est_cost"})


def derive_seed(run_seed: int, item_id: str) -> int:
    """An item's seed depends only on (run seed, item id): never on shard, batch or retry."""
    digest = hashlib.sha256(f"{run_seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_MODULUS


def estimate_prompt_tokens(prompt: str) -> int:
    """Cheap token estimate (≈4 characters a token), used only when no tokenizer is available."""
    return max(1, (len(prompt) + 3) // 4)


def estimate_cost(task: str, *, prompt_tokens: int, max_new_tokens: int, steps: int, height: int, width: int) -> float:
    """Relative cost of one item, used to balance shards: the one place that defines it.

    Text: tokens the model processes, ``prompt_tokens + max_new_tokens`` (prefill + decode
    positions; the prompt tokens should come from the model's own tokenizer).
    Images: ``steps × height × width`` (denoising steps times pixels); the prompt barely matters.
    Costs of one run are all of one task, so the two units never mix.
    """
    if task == "image":
        return float(steps * height * width)
    return float(prompt_tokens + max_new_tokens)


def canary_arm(item_id: str, fraction: float) -> str:
    """'candidate' for a deterministic ``fraction`` of ids (hash of the id), else 'production'.

    Independent of shard, batch and retry, so an item always lands in the same arm.
    """
    digest = hashlib.sha256(f"canary:{item_id}".encode()).digest()
    return "candidate" if int.from_bytes(digest[:8], "big") / 2**64 < fraction else "production"
