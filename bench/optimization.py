"""Optimised variants against their parent: throughput, size and quality, side by side.

``python -m bench.optimization [--quick] [--pairs N] [--work DIR]``

Builds (or reuses from ``--work``) the variants of ``catalog-copy`` v2 with :mod:`models.optimize` —
int8 (CPU recipe, torch.ao dynamic int8; plus the torchao backend for the record where torchao is
installed: ``make setup`` puts it in ``.venv/torchao``, off the import path, see bench/isolated_torchao.py;
the ``gpu`` extra installs it too), structured 50% MLP pruning, a distilled
student — and prints one JSON line per variant to stdout (progress to stderr; a variant that cannot
be built here gets a line with ``"built": false`` and why). Conventions (DESIGN.md §4): one process
pinned to one core with one intra-op thread,
warm-up, parent and variant timed back to back on the same batch with their order alternating,
ratio = median of the per-pair ratios (variant items/s ÷ parent items/s) with min/max; greedy
decoding with a fixed output length (``min_new_tokens = max_new_tokens``); a batch of 32 prompts.
The int8 lines also sweep larger batches, where int8 GEMMs start to pay for their quantise/dequantise
overhead. Size is the variant's bytes ÷ the parent's; quality is the mention rate on 200 example rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import isolated_torchao

REPO = Path(__file__).resolve().parents[1]
PARENT = REPO / "models" / "zoo" / "catalog-copy" / "v2"
BATCH = 32
NEW_TOKENS = 16
SWEEP = (64, 128, 256, 512, 1024)
DISTILL = {"hidden_size": 64, "layers": 2, "steps": 600}

log = logging.getLogger("bench.optimization")


def pin_process() -> dict[str, Any]:
    """One core (as ``taskset -c 0``), one intra-op thread, no hub access. Call before heavy imports."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import torch

    torch.set_num_threads(1)
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.machine())
    return {"pinned": sorted(os.sched_getaffinity(0)), "available": cpus, "model": model,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    for name in ("torchao", "models", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    log.setLevel(logging.INFO)  # our own progress lines still reach stderr


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


# --------------------------------------------------------------------------- variants


def torchao_missing() -> str | None:
    """Why the torchao variant cannot be built here, or None (then torchao joins this process's path)."""
    why = isolated_torchao.missing()
    if why is None:
        isolated_torchao.use_in_this_process()
    return why


def build_variants(work: Path, quick: bool, names: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The requested variants' cards (name -> card) and those skipped (name -> why).

    A variant already in ``work`` (its optimization.json exists) is reused.
    """
    from models.optimize import distill, prune, quantize_int8

    rows = 50 if quick else 200
    steps = 60 if quick else DISTILL["steps"]
    recipes: dict[str, Callable[[Path], dict[str, Any]]] = {
        "int8": lambda out: quantize_int8(PARENT, out, backend="torch.ao", eval_rows=rows),
        "int8_torchao": lambda out: quantize_int8(PARENT, out, backend="torchao", eval_rows=rows),
        "pruned50_structured": lambda out: prune(PARENT, out, 0.5, structured=True, eval_rows=rows),
        "distilled": lambda out: distill(PARENT, out, steps=steps, hidden_size=DISTILL["hidden_size"],
                                         layers=DISTILL["layers"], eval_rows=rows),
    }
    unavailable = {"int8_torchao": torchao_missing()} if "int8_torchao" in names else {}
    cards, skipped = {}, {}
    for name in names:
        build, why = recipes[name], unavailable.get(name)
        if why:
            skipped[name] = why
            log.info("not building %s: %s", name, why)
            continue
        out = work / name
        card_path = out / "optimization.json"
        if card_path.is_file():
            cards[name] = json.loads(card_path.read_text())
            log.info("reusing %s from %s", name, out)
            continue
        started = time.perf_counter()
        cards[name] = build(out)
        log.info("built %s in %.1fs: size %.3f, quality %s", name, time.perf_counter() - started,
                 cards[name]["size"]["ratio"], cards[name]["quality"])
    return cards, skipped


def load_variant(path: Path) -> Any:
    from models.optimize import apply_recipe, load_causal_lm, read_recipe

    model, _ = load_causal_lm(path)
    return apply_recipe(model, read_recipe(path), "cpu")


# --------------------------------------------------------------------------- timing


def prompts(n: int) -> list[str]:
    """``n`` example-style prompts (all one token length), cycling through every attribute combination."""
    from models.zoo.catalog_corpus import all_combinations, as_attributes, make_prompt

    combos = all_combinations()
    step = 7  # coprime with 3600: spreads the prompts over the whole attribute space
    return [make_prompt(as_attributes(combos[(i * step) % len(combos)])) for i in range(n)]


def make_timer(model: Any, enc: dict[str, Any], pad_id: int, repeat: int) -> Callable[[], float]:
    """Seconds for ``repeat`` back-to-back greedy batches (repeats smooth out scheduler jitter)."""
    import torch

    def run() -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            for _ in range(repeat):
                out = model.generate(**enc, do_sample=False, max_new_tokens=NEW_TOKENS,
                                     min_new_tokens=NEW_TOKENS, pad_token_id=pad_id)
            seconds = time.perf_counter() - started
        assert out.shape[1] == enc["input_ids"].shape[1] + NEW_TOKENS
        return seconds / repeat

    return run


def repeats_for(model: Any, enc: dict[str, Any], pad_id: int, target_s: float = 0.2) -> int:
    """How many batches make one timed sample last about ``target_s`` (after a warm-up run)."""
    make_timer(model, enc, pad_id, 1)()
    return max(1, round(target_s / make_timer(model, enc, pad_id, 1)()))


def ab(parent: Callable[[], float], variant: Callable[[], float], pairs: int, items: int) -> dict[str, Any]:
    """Warm-up, then ``pairs`` interleaved samples (order alternating); variant ÷ parent throughput."""
    parent(), variant()
    ratios, rates_p, rates_v = [], [], []
    for i in range(pairs):
        if i % 2:
            tv, tp = variant(), parent()
        else:
            tp, tv = parent(), variant()
        ratios.append(tp / tv)
        rates_p.append(items / tp)
        rates_v.append(items / tv)
    return {"batch": items, "throughput_ratio": spread(ratios),
            "items_per_s": {"parent": round(statistics.median(rates_p), 1),
                            "variant": round(statistics.median(rates_v), 1)}}


def bench_variant(name: str, card: dict[str, Any], parent: Any, variant: Any, tokenizer: Any, pairs: int,
                  sweep: tuple[int, ...], cpu: dict[str, Any]) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    results = []
    for batch in (BATCH, *sweep):
        enc = dict(tokenizer(prompts(batch), return_tensors="pt", padding=True))
        repeat = repeats_for(parent, enc, tokenizer.pad_token_id)
        result = ab(make_timer(parent, enc, tokenizer.pad_token_id, repeat),
                    make_timer(variant, enc, tokenizer.pad_token_id, repeat),
                    pairs if batch == BATCH else max(5, pairs // 2), batch)
        results.append({**result, "batches_per_sample": repeat})
    main, *rest = results
    faster = main["throughput_ratio"]["median"] > 1.0
    line: dict[str, Any] = {
        "bench": "optimization",
        "variant": name,
        "method": card["lineage"]["method"],
        "params": {k: v for k, v in card["lineage"]["params"].items() if k in
                   ("method", "sparsity", "structured", "hidden_size", "layers", "steps", "backend")},
        "new_tokens": NEW_TOKENS,
        "pairs": pairs,
        **main,
        "size_ratio": card["size"]["ratio"],
        "size_bytes": {"parent": card["size"]["parent_bytes"], "variant": card["size"]["variant_bytes"],
                       "measured_as": card["size"]["measured_as"].split(";")[0]},
        "quality": card["quality"],
        "targets": {"smaller": card["size"]["ratio"] < 1.0, "faster": faster},
        "cpu": cpu,
        "load_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
    }
    if rest:
        line["batch_sweep"] = rest
    return line


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer pairs, steps and rows")
    parser.add_argument("--pairs", type=int, default=None, help="timed A/B pairs at batch 32 (default 31)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the variants (reused if built)")
    parser.add_argument("--variants", default="int8,int8_torchao,pruned50_structured,distilled")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    cpu = pin_process()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    quiet()
    pairs = args.pairs or (4 if args.quick else 31)
    with tempfile.TemporaryDirectory(prefix="genbatch-opt-") as tmp:
        work = args.work or Path(tmp)
        cards, skipped = build_variants(work, args.quick, names)
        from models.optimize import load_causal_lm

        parent, tokenizer = load_causal_lm(PARENT)
        for name in names:
            if name in skipped:
                print(json.dumps({"bench": "optimization", "variant": name, "built": False, "reason": skipped[name]}),
                      flush=True)
                continue
            variant = load_variant(work / name)
            sweep = SWEEP if name.startswith("int8") and not args.quick else ()
            line = bench_variant(name, cards[name], parent, variant, tokenizer, pairs, sweep, cpu)
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
