"""GPU check of the text runner (run on a lent GPU): bf16 vs fp32, batch-size sweep to the knee.

Uses genbatch's own ``TextRunner`` (left padding, inference_mode, fixed output length) on the
catalog-copy model. Prints one JSON line. The tiny model is launch-bound on a GPU, so the figures
show the runner's overheads and the batch size where throughput stops growing, not a roofline.
``--compare-loops`` instead compares the runner's own decoding loop with ``model.generate`` on
mixed-length prompts (same tokens? items/s by batch size), fp32 and bf16.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.runners import Item, TextRunner

MODEL = Path(__file__).resolve().parents[1] / "models" / "zoo" / "catalog-copy" / "v2"
GEN = {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0}


def _items(n: int) -> list[Item]:
    colours = ["red", "blue", "green", "black", "white", "olive", "navy"]
    return [Item(f"i{k}", f"colour: {colours[k % 7]} | material: wool | item: scarf\ndescription:", k, {}, None, {})
            for k in range(n)]


def _rate(runner: TextRunner, batch: int, reps: int = 3) -> float:
    return _rate_items(runner, _items(batch), reps)


def _mixed_items(n: int) -> list[Item]:
    """Mixed-length prompts, what the own loop's length groups are for: 1 to 12 attribute pairs, so
    that prompt + 32 new tokens stay within the model's 128-token context."""
    words = ["colour: red", "material: wool", "item: scarf", "size: large", "fit: loose", "care: hand wash"]
    return [Item(f"m{k}", " | ".join(words[j % len(words)] for j in range(1 + (k * 7) % 12)) + "\ndescription:",
                 k, {}, None, {}) for k in range(n)]


def compare_loops(precision: str, batches: tuple[int, ...] = (64, 1024, 8192)) -> dict[str, Any]:
    """genbatch's own decoding loop vs ``model.generate`` on CUDA: same tokens? how fast?"""
    runner = TextRunner(MODEL, generation=GEN, precision=precision, device="cuda:0")
    runner.fixed_output_length = True
    own = runner.own_loop
    probe = _mixed_items(256)
    outs = {}
    for mode in ("own", "generate"):
        runner.own_loop = own if mode == "own" else ""
        outs[mode] = [r["output"] for r in runner.run_batch(probe)]
    same = sum(a == b for a, b in zip(outs["own"], outs["generate"], strict=True)) / len(probe)
    rates: dict[str, dict[int, float]] = {"own": {}, "generate": {}}
    for batch in batches:
        items = _mixed_items(batch)
        for mode in ("own", "generate", "own", "generate"):  # interleaved A/B, warm-up inside _rate
            runner.own_loop = own if mode == "own" else ""
            rates[mode][batch] = max(rates[mode].get(batch, 0.0), round(_rate_items(runner, items), 1))
    del runner
    torch.cuda.empty_cache()
    return {"own_loop": own, "same_output_fraction": round(same, 4), "items_per_s": rates,
            "own_vs_generate": {b: round(rates["own"][b] / rates["generate"][b], 3) for b in batches}}


def _rate_items(runner: TextRunner, items: list[Item], reps: int = 2) -> float:
    """Median items/s of ``reps`` timed batches after a warm-up one (kernels, caches)."""
    runner.run_batch(items)
    torch.cuda.synchronize()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        runner.run_batch(items)
        torch.cuda.synchronize()
        rates.append(len(items) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> int:
    if not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu_sweep", "error": "no CUDA device"}))
        return 1
    out: dict[str, Any] = {"bench": "gpu_sweep", "device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                           "max_new_tokens": GEN["max_new_tokens"], "sweep": {}}
    if "--compare-loops" in sys.argv:
        out["bench"] = "gpu_loops"
        out["loops"] = {p: compare_loops(p) for p in ("fp32", "bf16")}
        print(json.dumps(out))
        return 0
    for precision in ("fp32", "bf16"):
        runner = TextRunner(MODEL, generation=GEN, precision=precision, device="cuda:0")
        runner.fixed_output_length = True
        sweep = {}
        for batch in (1, 16, 64, 256, 1024, 4096, 16384, 32768):
            sweep[batch] = round(_rate(runner, batch), 1)
        out["sweep"][precision] = sweep
        del runner
        torch.cuda.empty_cache()
    best = {p: max(s.values()) for p, s in out["sweep"].items()}
    out["bf16_vs_fp32_at_best"] = round(best["bf16"] / best["fp32"], 3)
    knee = {}
    for p, s in out["sweep"].items():
        peak = max(s.values())
        knee[p] = min(b for b, r in s.items() if r >= 0.9 * peak)
    out["knee_batch_90pct"] = knee
    out["decode_tokens_per_s_at_best"] = {p: round(b * GEN["max_new_tokens"], 0) for p, b in best.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
