"""Structured output's cost: the text runner with and without ``generation.response_schema``.

``python -m bench.structured_output [--items N] [--pairs N]``

Prints one JSON line. Same runner object (catalog-copy v2), same heavy-tailed prompts as
bench/worker_throughput.py, batches of 64 in token-length order (as the worker forms them), greedy,
up to 64 new tokens with EOS allowed (a schema's output ends when its JSON does, so a fixed output
length would measure nothing real). Legs, interleaved per repetition, order alternating:

  plain    no schema
  schema   the schema's mask, its allowed-token cache warm (a worker past its first batches)
  cold     the schema's mask built fresh (token table and cache from empty: a worker's first batch)

Prompts longer than 64 tokens are left out (catalog-copy has 128 positions).
Reported: items/s and new tokens/s of each leg, the ratios schema/plain and cold/plain (median of the
per-repetition ratios, with min/max), the share of schema outputs that validate (``jsonschema``), and
the automaton states cached. Items/s is what a run pays; tokens/s separates the mask's per-step cost
from the outputs' different lengths. One process pinned to one core, one intra-op thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from bench.worker_throughput import TEXT_MODEL, load_average, pin_process, quiet_libraries, spread, text_prompts

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "navy", "olive", "black", "white", "green", "blue", "grey", "yellow", "pink"]},
        "description": {"type": "string", "minLength": 1, "maxLength": 40},
        "in_stock": {"type": "boolean"},
    },
}
MAX_NEW_TOKENS = 64  # >= the schema's shortest JSON (54 characters), as the spec requires
CONTEXT = 128  # catalog-copy's positions: prompt + new tokens must fit
BATCH = 64


def _leg(runner: Any, batches: list[list[Any]]) -> tuple[float, int, list[str]]:
    t0 = time.perf_counter()
    outputs = [o for batch in batches for o in runner.run_batch(batch)]
    wall = time.perf_counter() - t0
    return wall, sum(int(o["new_tokens"]) for o in outputs), [o["output"] for o in outputs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.structured_output", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=384)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)
    cpu = pin_process()
    quiet_libraries()
    import jsonschema

    from models.constrained import SchemaConstraint
    from models.runners import Item, TextRunner

    generation = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.0, "top_p": 1.0}
    runner = TextRunner(TEXT_MODEL, generation=generation, precision="fp32", device="cpu")
    fits = [p for p in text_prompts(runner.tokenizer, args.items * 2) if runner.token_length(p) <= CONTEXT - MAX_NEW_TOKENS]
    prompts = sorted(fits[:args.items], key=runner.token_length)
    items = [Item(id=f"i{i}", prompt=p, seed=i, params={}, negative_prompt=None, record={}) for i, p in enumerate(prompts)]
    batches = [items[i:i + BATCH] for i in range(0, len(items), BATCH)]

    def constraint() -> SchemaConstraint:
        return SchemaConstraint(SCHEMA, runner.tokenizer, runner.eos_ids.tolist(), int(runner.model.config.vocab_size))

    warm = constraint()
    legs = {"plain": lambda: None, "schema": lambda: warm, "cold": constraint}
    runner.schema_constraint = warm
    _leg(runner, batches[:2])  # warm-up: torch kernels, and the warm leg's cache
    runner.schema_constraint = None
    _leg(runner, batches[:2])
    walls: dict[str, list[float]] = {k: [] for k in legs}
    tokens: dict[str, list[int]] = {k: [] for k in legs}
    valid = total = 0
    load = [load_average()]
    for rep in range(args.pairs):
        order = list(legs) if rep % 2 == 0 else list(reversed(legs))
        for name in order:
            runner.schema_constraint = legs[name]()
            wall, new_tokens, outputs = _leg(runner, batches)
            walls[name].append(wall)
            tokens[name].append(new_tokens)
            if name != "plain":
                for text in outputs:
                    total += 1
                    try:
                        jsonschema.validate(json.loads(text), SCHEMA)
                        valid += 1
                    except (ValueError, jsonschema.ValidationError):
                        pass
        load.append(load_average())
        print(f"repetition {rep + 1}/{args.pairs}: " + ", ".join(f"{k} {walls[k][-1]:.2f} s" for k in legs),
              file=sys.stderr)
    n = len(items)

    def ratio(a: str, b: str, per_token: bool = False) -> dict[str, float]:
        values = [(tokens[a][i] / walls[a][i]) / (tokens[b][i] / walls[b][i]) if per_token else walls[b][i] / walls[a][i]
                  for i in range(args.pairs)]
        return spread(values)

    line = {
        "bench": "structured_output",
        "items": n, "batch": BATCH, "max_new_tokens": MAX_NEW_TOKENS, "pairs": args.pairs, "schema": SCHEMA,
        "items_per_s": {k: round(n / statistics.median(v), 1) for k, v in walls.items()},
        "new_tokens_per_item": {k: round(statistics.median(v) / n, 2) for k, v in tokens.items()},
        "new_tokens_per_s": {k: round(statistics.median([t / w for t, w in zip(tokens[k], walls[k], strict=True)]), 1)
                             for k in legs},
        "items_per_s_ratio": {"schema_vs_plain": ratio("schema", "plain"), "cold_vs_plain": ratio("cold", "plain")},
        "tokens_per_s_ratio": {"schema_vs_plain": ratio("schema", "plain", per_token=True),
                               "cold_vs_plain": ratio("cold", "plain", per_token=True)},
        "schema_valid_rate": round(valid / total, 6) if total else None,
        "states_cached": len(warm._cache),
        "cpu": cpu, "load_average": {"min": min(load), "max": max(load)},
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
