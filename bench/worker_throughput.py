"""Worker throughput: the genbatch shard worker against a naive loop, Beam RunInference and the limit.

``python -m bench.worker_throughput [--quick] [--task text|image|all] [--pairs N] [--clock wall|cpu|both]
[--shortcut on|off|both]``

Prints one JSON line per task (text, image) to stdout; progress goes to stderr. Conventions
(DESIGN.md §4, docs/benchmarks.md): one process pinned to one core with one intra-op thread,
warm-up first, the variants of one repetition run back to back (their order alternates between
repetitions), and the ratios are the median of the per-repetition ratios with their min/max.
Greedy decoding with a fixed output length (every row decodes exactly ``max_new_tokens``).
Every timed region is clocked twice, wall (``time.perf_counter``) and CPU time of the process
(``time.process_time``); ``--clock`` picks the ratios reported. ``--shortcut both`` runs the text
worker with the runner's last-layer prefill shortcut on and off (``TextRunner(prefill_shortcut=…)``)
as two variants of the same repetitions.

Variants (same prompts, same params, the same loaded model object wherever the API allows):

text (catalog-copy v2, heavy-tailed prompt lengths)
  genbatch  ``models.worker.run_shard`` on a freshly prepared run dir (reads the shard, sorts
            windows by token length, batches of up to 64, the runner's own decoding loop, one
            create-only part per batch, metrics, manifest); the runner is built once and passed
            in, so model load is excluded; with ``--shortcut both`` also ``genbatch_shortcut_off``
  naive     ``transformers.pipeline("text-generation")`` called once per item in a Python loop
  beam      Apache Beam ``RunInference`` with ``HuggingFacePipelineModelHandler`` (length-aware
            batching on), Create → RunInference → JSON → WriteToText on the in-process FnApiRunner;
            its batches' token counts and the rows written are counted after the clock stops
  limit     ``model.generate`` on full batches (64) of equal-length (median) pre-tokenized prompts,
            no tokenizer, no decode, no I/O
image (tiny-image v1, 4 steps, 64×64)
  genbatch  ``run_shard`` with an ``ImageRunner`` (auto batch size 4→16, PNG per image)
  naive     the pipeline called once per prompt with its own generator
  limit     the pipeline on full batches (16) with one generator per image, no PNG, no writes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEXT_MODEL = REPO / "models" / "zoo" / "catalog-copy" / "v2"
IMAGE_MODEL = REPO / "models" / "zoo" / "tiny-image" / "v1"

TEXT_ITEMS = 400
MAX_NEW_TOKENS = 16
MAX_PROMPT_TOKENS = 112  # catalog-copy has 128 positions: prompt + 16 new tokens must fit
IMAGE_ITEMS = 48
IMAGE_PARAMS = {"num_inference_steps": 4, "guidance_scale": 1.0, "height": 64, "width": 64}
PROMPT_SEED = 20240613
# The naive loops run an evenly strided subset (same length mix) and report a per-item rate:
# a short run sits close in time to the other variants of its repetition, which is what keeps
# the per-repetition ratios meaningful on shared cores.
NAIVE_TEXT_ITEMS = 100
NAIVE_IMAGE_ITEMS = 24

CLOCKS = ("wall", "cpu")
TARGETS = {
    "text": {"vs_naive": 10.0, "vs_beam_runinference": 1.3, "of_limit": 0.85},
    "image": {"vs_naive": 2.0, "of_limit": 0.85},
}

log = logging.getLogger("bench.worker_throughput")


# --------------------------------------------------------------------------- process setup


def pin_process() -> dict[str, Any]:
    """One core (``taskset -c 0``), one intra-op thread, no hub access. Call before heavy imports."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only possible once per process)
        pass
    model = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                  if ln.startswith("model name")), platform.processor() or platform.machine())
    return {"pinned": sorted(os.sched_getaffinity(0)), "available": cpus, "model": model,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def load_average() -> float:
    """1-minute load average of the machine: other jobs on the shared cores show up here."""
    return round(os.getloadavg()[0], 2)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("apache_beam", "models", "genbatch", "diffusers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


# --------------------------------------------------------------------------- statistics


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def padded_fraction(batches: list[list[int]]) -> float:
    """Pad tokens / all prompt tokens fed to the model, when each batch is left-padded to its longest."""
    pad = total = 0
    for lengths in batches:
        longest = max(lengths)
        pad += sum(longest - n for n in lengths)
        total += longest * len(lengths)
    return round(pad / total, 4) if total else 0.0


def cut(values: list[int], sizes: list[int]) -> list[list[int]]:
    out, start = [], 0
    for size in sizes:
        out.append(values[start : start + size])
        start += size
    return out


class Stopwatch:
    """Wall and CPU seconds of one timed region.

    CPU time (``time.process_time``: this process, all its threads) leaves out what the wall clock
    also counts on a shared machine: waiting for the core while other jobs hold it, and fsyncs.
    """

    wall = cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


Variant = Callable[[], tuple[int, Stopwatch]]


@dataclass
class Timings:
    """Items/s per clock, per variant, per repetition."""

    rates: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {c: {} for c in CLOCKS})

    def add(self, variant: str, items: int, lap: Stopwatch) -> None:
        for clock in CLOCKS:
            self.rates[clock].setdefault(variant, []).append(items / getattr(lap, clock))

    def ratio(self, a: str, b: str, clock: str) -> dict[str, float]:
        rates = self.rates[clock]
        return spread([x / y for x, y in zip(rates[a], rates[b], strict=True)])

    def report(self, clock: str, ratios: dict[str, tuple[str, str]], targets: dict[str, float]) -> dict[str, Any]:
        """One clock's ratios (name -> numerator, denominator), the targets they meet, items/s medians."""
        out = {name: self.ratio(a, b, clock) for name, (a, b) in ratios.items()}
        return {"ratios": out, "meets": {k: out[k]["median"] >= v for k, v in targets.items()},
                "items_per_s": {k: round(statistics.median(v), 1) for k, v in self.rates[clock].items()}}


def by_clock(timings: Timings, clocks: tuple[str, ...], ratios: dict[str, tuple[str, str]],
             targets: dict[str, float]) -> dict[str, Any]:
    """The JSON's timing part: the first clock's report at the top level (as before), every clock's under ``by_clock``."""
    reports = {clock: timings.report(clock, ratios, targets) for clock in clocks}
    return {"clock": clocks[0], **reports[clocks[0]], "targets": targets, "by_clock": reports}


def interleave(variants: dict[str, Variant], pairs: int, timings: Timings, task: str) -> None:
    """Run every variant once per repetition; alternate the order so drift hits all sides alike."""
    names = list(variants)
    for rep in range(pairs):
        order = names if rep % 2 == 0 else names[::-1]
        for name in order:
            items, lap = variants[name]()
            timings.add(name, items, lap)
        print(f"[{task}] pair {rep + 1}/{pairs}: "
              + ", ".join(f"{n} {timings.rates['wall'][n][-1]:.0f}/s (cpu {timings.rates['cpu'][n][-1]:.0f}/s)"
                          for n in names), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- run dirs


def prepare_run_dir(root: Path, task: str, model_name: str, model_dir: Path, generation: dict[str, Any],
                    items: list[dict[str, Any]]) -> str:
    """What the prepare + preprocess stages leave behind for one shard, without Airflow or Beam."""
    from genbatch.run.layout import RunLayout
    from genbatch.run.model_ref import ModelVersion
    from genbatch.run.spec import parse_spec
    from genbatch.run.state import RunState, write_run_state

    spec = parse_spec({
        "task": task,
        "input": {"uri": "bench-input.jsonl"},
        "model": {"name": model_name, "version": 1},
        "generation": generation,
        "sharding": {"num_shards": 1},
        "output": {"uri": str(root)},
    })
    state = RunState(run_id="bench", spec=spec, model=ModelVersion(model_name, 1, str(model_dir)),
                     layout=RunLayout.for_run(str(root), "bench"), num_shards=1)
    write_run_state(state)
    shard = Path(state.layout.shard_input(0, 1))
    shard.parent.mkdir(parents=True, exist_ok=True)
    shard.write_text("".join(json.dumps(it) + "\n" for it in items))
    return state.layout.root


def shard_items(prompts: list[str]) -> list[dict[str, Any]]:
    return [{"id": f"item-{i:05d}", "prompt": p, "seed": i, "params": {}, "row_index": i} for i, p in enumerate(prompts)]


def committed_batches(run_dir: str) -> list[list[dict[str, Any]]]:
    """The records of each part file (one part = one batch), in part order."""
    manifest = json.loads((Path(run_dir) / "outputs" / "shard-00000" / "_manifest.json").read_text())
    batches = []
    for part in sorted(manifest["parts"], key=lambda p: p["path"]):
        lines = (Path(run_dir) / part["path"]).read_text().splitlines()
        batches.append([json.loads(ln) for ln in lines if ln.strip()])
    return batches


class GenbatchVariant:
    """``run_shard`` on a fresh run dir each call (resume would otherwise skip every item)."""

    def __init__(self, tmp: Path, task: str, runner: Any, model_name: str, model_dir: Path,
                 generation: dict[str, Any], prompts: list[str], name: str = "genbatch") -> None:
        self.tmp, self.task, self.runner, self.name = tmp, task, runner, name
        self.model_name, self.model_dir, self.generation = model_name, model_dir, generation
        self.items = shard_items(prompts)
        self.count = 0
        self.last_run_dir = ""

    def __call__(self) -> tuple[int, Stopwatch]:
        from models.worker import run_shard

        self.count += 1
        root = self.tmp / f"{self.name}-{self.task}-{self.count}"
        run_dir = prepare_run_dir(root, self.task, self.model_name, self.model_dir, self.generation, self.items)
        with Stopwatch() as lap:
            manifest = run_shard(run_dir, 0, runner=self.runner)
        if manifest["generated"] != len(self.items):
            raise RuntimeError(f"genbatch generated {manifest['generated']} of {len(self.items)} items: {manifest}")
        self.last_run_dir = run_dir
        return len(self.items), lap


# --------------------------------------------------------------------------- text


def text_prompts(tokenizer: Any, n: int) -> list[str]:
    """Catalog prompts behind a Pareto-distributed number of extra attribute segments.

    Most prompts keep their plain length (15–17 tokens); a heavy tail reaches
    ``MAX_PROMPT_TOKENS``. The tokenizer handles any text (byte fallback).
    """
    from models.zoo import catalog_corpus as cc

    extra_values = {"colour": cc.COLOURS, "material": cc.MATERIALS, "item": cc.ITEMS, "style": cc.STYLES, "use": cc.USES}
    keys = sorted(extra_values)
    combos = cc.heldout_combinations()
    rng = random.Random(PROMPT_SEED)
    prompts = []
    for i in range(n):
        base = cc.make_prompt(cc.as_attributes(combos[i % len(combos)]))
        count = min(int((rng.paretovariate(1.5) - 1.0) * 2.5), 24)
        segments = []
        for _ in range(count):
            key = rng.choice(keys)
            segments.append(f"{key}: {rng.choice(extra_values[key])} | ")
        while segments and len(tokenizer("".join(segments) + base)["input_ids"]) > MAX_PROMPT_TOKENS:
            segments.pop()
        prompts.append("".join(segments) + base)
    return prompts


def quantiles(lengths: list[int]) -> dict[str, float]:
    s = sorted(lengths)
    return {"min": s[0], "median": statistics.median(s), "p90": s[int(0.9 * (len(s) - 1))], "max": s[-1],
            "mean": round(sum(s) / len(s), 1)}


def bench_text(tmp: Path, pairs: int, naive_items: int, quick: bool, cpu: dict[str, Any],
               clocks: tuple[str, ...] = ("wall",), shortcut: str = "on") -> dict[str, Any]:
    import torch
    import transformers

    from bench import beam_baseline
    from models.runners import Item, TextRunner
    from models.worker import AUTO_BATCH

    start_bs, cap = AUTO_BATCH["text"]
    generation = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.0, "top_p": 1.0}
    # "both": the worker with the last-layer prefill shortcut on ("genbatch") and off
    # ("genbatch_shortcut_off"); the two runners hold equal copies of the model
    flags = {"on": (True,), "off": (False,), "both": (True, False)}[shortcut]
    runners = {flag: TextRunner(TEXT_MODEL, generation=generation, precision="fp32", device="cpu",
                                prefill_shortcut=flag) for flag in flags}
    for each in runners.values():
        each.fixed_output_length = True  # every row decodes exactly max_new_tokens (DESIGN §4)
    runner = runners[flags[0]]
    tok, model = runner.tokenizer, runner.model
    prompts = text_prompts(tok, TEXT_ITEMS)
    lengths = [runner.token_length(p) for p in prompts]
    length_of = dict(zip(prompts, lengths, strict=True))  # the proxies' bookkeeping, never timed
    gen_kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "min_new_tokens": MAX_NEW_TOKENS, "do_sample": False}

    # naive: a per-item pipeline loop on an evenly strided subset (same length mix), per-item rate
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tok)
    stride = max(1, len(prompts) // naive_items)
    naive_prompts = prompts[::stride][:naive_items]

    def naive() -> tuple[int, Stopwatch]:
        with Stopwatch() as lap:
            for p in naive_prompts:
                pipe(p, return_full_text=False, **gen_kwargs)
        return len(naive_prompts), lap

    # beam: RunInference with the HF pipeline handler around the same model object
    beam_baseline.SHARED.update(pipeline=pipe, tokenizer=tok)
    q = quantiles(lengths)
    boundaries = sorted({int(q["median"]) + 1, 32, 48, 64, 96})
    beam_kwargs = beam_baseline.handler_kwargs(TEXT_MODEL, max_batch_size=cap, min_batch_size=start_bs,
                                               bucket_boundaries=boundaries)
    beam_args = {**gen_kwargs, "return_full_text": False, "batch_size": cap}
    beam_runs = [0]

    def beam() -> tuple[int, Stopwatch]:
        beam_runs[0] += 1
        out = tmp / f"beam-{beam_runs[0]}"
        out.mkdir()
        beam_baseline.BATCHES.clear()
        with Stopwatch() as lap:
            beam_baseline.run_pipeline(prompts, out, beam_kwargs, beam_args)
        rows = beam_baseline.rows_written(out)  # counted after the clock stopped
        if rows != len(prompts):
            raise RuntimeError(f"beam wrote {rows} of {len(prompts)} rows")
        return rows, lap

    # limit: generate on full batches of equal-length (median) prompts, tokenized beforehand
    median_len = int(statistics.median(lengths))
    pool = [p for p, n in zip(prompts, lengths, strict=True) if n == median_len]
    if not pool:
        raise RuntimeError(f"no prompt has the median length {median_len}")
    n_batches = -(-len(prompts) // cap)
    limit_inputs = []
    for b in range(n_batches):
        enc = tok([pool[(b * cap + i) % len(pool)] for i in range(cap)], return_tensors="pt", padding=True)
        assert int(enc["attention_mask"].sum()) == cap * median_len, "limit prompts must have equal length"
        limit_inputs.append(enc)

    def generate_all(inputs: list[Any], items: int) -> tuple[int, Stopwatch]:
        with Stopwatch() as lap, torch.inference_mode():
            for enc in inputs:
                model.generate(**enc, pad_token_id=tok.pad_token_id, **gen_kwargs)
        return items, lap

    # the same prompts' own limit: globally sorted by length, batches of `cap`, tokenized beforehand
    by_length = sorted(prompts, key=length_of.__getitem__)
    same_inputs = [tok(by_length[i : i + cap], return_tensors="pt", padding=True) for i in range(0, len(prompts), cap)]

    genbatch_variants = {("genbatch" if flag == flags[0] else "genbatch_shortcut_off"): GenbatchVariant(
        tmp, "text", each, "catalog-copy", TEXT_MODEL, {**generation, "batch_size": "auto"}, prompts,
        name=f"genbatch-shortcut-{'on' if flag else 'off'}") for flag, each in runners.items()}
    genbatch = genbatch_variants["genbatch"]

    print(f"[text] {len(prompts)} prompts, tokens {q}; warm-up", file=sys.stderr, flush=True)
    load_before = load_average()
    stock_load_s = beam_baseline.stock_load_seconds(beam_kwargs)
    variants: dict[str, Variant] = {
        **genbatch_variants, "naive": naive, "beam_runinference": beam,
        "limit": lambda: generate_all(limit_inputs, n_batches * cap),
        "limit_same_prompts": lambda: generate_all(same_inputs, len(prompts))}
    saved = naive_prompts
    naive_prompts = naive_prompts[:8]  # a short naive warm-up is enough
    for fn in variants.values():
        fn()
    naive_prompts = saved

    timings = Timings()
    interleave(variants, pairs, timings, "text")
    load_after = load_average()

    # the runner's own work counters for one more (untimed) genbatch run: prompt tokens its
    # length-grouped prefill fed (real + pad), forward calls, row-steps decoded
    runner.work = dict.fromkeys(runner.work, 0)
    genbatch()
    work = dict(runner.work)

    # deterministic proxies from the batches genbatch actually committed (last repetition)
    batches = committed_batches(genbatch.last_run_dir)
    by_id = {it["id"]: n for it, n in zip(genbatch.items, lengths, strict=True)}
    formed = [[by_id[r["id"]] for r in batch] for batch in batches]
    sizes = [len(b) for b in formed]
    wasted = sum(max(r["new_tokens"] for r in b) - r["new_tokens"] for b in batches for r in b)
    beam_formed = [[length_of[p] for p in batch] for batch in beam_baseline.BATCHES]

    # what stopping at EOS would change: the same batches, greedy, without min_new_tokens
    runner.fixed_output_length = False
    runner.work = dict.fromkeys(runner.work, 0)
    item_of = {it["id"]: it for it in genbatch.items}
    natural_steps = needed = 0
    for batch in batches:
        items = [Item(id=r["id"], prompt=item_of[r["id"]]["prompt"], seed=r["seed"], params={}, negative_prompt=None,
                      record=item_of[r["id"]]) for r in batch]
        counts = [res["new_tokens"] for res in runner.run_batch(items)]
        natural_steps += max(counts) * len(counts)
        needed += sum(counts)
    eos_row_steps = runner.work["row_steps"]
    runner.fixed_output_length = True
    fixed_steps = len(prompts) * MAX_NEW_TOKENS

    ratios = {
        "vs_naive": ("genbatch", "naive"),
        "vs_beam_runinference": ("genbatch", "beam_runinference"),
        "of_limit": ("genbatch", "limit"),
        "of_limit_same_prompts": ("genbatch", "limit_same_prompts"),  # context, no target
        # the ceiling any batching of *these* prompts has against the equal-length limit
        "limit_same_prompts_of_limit": ("limit_same_prompts", "limit"),
        "limit_vs_naive": ("limit", "naive"),
    }
    if len(flags) == 2:
        ratios.update({
            "shortcut_off_of_limit": ("genbatch_shortcut_off", "limit"),
            "shortcut_off_vs_naive": ("genbatch_shortcut_off", "naive"),
            "shortcut_off_vs_beam_runinference": ("genbatch_shortcut_off", "beam_runinference"),
            "shortcut_on_vs_off": ("genbatch", "genbatch_shortcut_off"),
        })
    return {
        "bench": "worker_throughput",
        "task": "text",
        "model": "catalog-copy@v2",
        "items": len(prompts),
        "quick": quick,
        "shortcut": {"genbatch": "on" if flags[0] else "off", "runs_shortcut": runner.last_layer_shortcut,
                     **({"genbatch_shortcut_off": "off"} if len(flags) == 2 else {})},
        **by_clock(timings, clocks, ratios, TARGETS["text"]),
        "padded_token_fraction": {
            "genbatch_batches": padded_fraction(formed),  # if each batch were prefilled as one padded block
            "genbatch": round(1 - sum(lengths) / work["prefill_tokens"], 4),  # what its grouped prefill fed
            "arrival_order": padded_fraction(cut(lengths, sizes)),
            "beam_runinference": padded_fraction(beam_formed),
            "limit": 0.0,
            "limit_same_prompts": padded_fraction([[length_of[p] for p in by_length[i : i + cap]]
                                                   for i in range(0, len(prompts), cap)]),
        },
        "prompt_tokens_fed": {  # real + pad tokens through prefill, per variant's batches
            "genbatch": work["prefill_tokens"],
            "genbatch_batches_as_one_block": sum(max(b) * len(b) for b in formed),
            "limit": n_batches * cap * median_len,
            "limit_same_prompts": sum(int(e["input_ids"].numel()) for e in same_inputs),
            "real_tokens_of_these_prompts": sum(lengths),
        },
        "wasted_decode_steps": wasted,
        "genbatch_work": {**work, "batches": len(formed)},
        "eos_stopping": {
            "row_steps_fixed_length": fixed_steps,
            "row_steps_if_eos_stops_batch": natural_steps,
            "tokens_needed_to_eos": needed,
            "would_save_vs_fixed": fixed_steps - natural_steps,
            "wasted_in_finished_rows": natural_steps - needed,
            "row_steps_genbatch_decodes": eos_row_steps,  # finished rows leave the batch
        },
        "batch_sizes": {"genbatch": sizes, "beam_runinference": [len(b) for b in beam_formed],
                        "limit": [cap] * n_batches, "limit_same_prompts": [int(e["input_ids"].shape[0]) for e in same_inputs]},
        "prompt_tokens": q,
        "max_new_tokens": MAX_NEW_TOKENS,
        "naive_items": len(naive_prompts),
        "naive_scaled": len(naive_prompts) != len(prompts),  # per-item rate of an evenly strided subset
        "naive_prompt_tokens_mean": round(statistics.mean(length_of[p] for p in naive_prompts), 1),
        "limit_items": n_batches * cap,
        "limit_prompt_tokens": median_len,
        "beam": {"handler": "HuggingFacePipelineModelHandler", "runner": "FnApiRunner",
                 "batching": {k: (v if not callable(v) else "token_length")
                              for k, v in beam_kwargs.items() if "batch" in k},
                 "stock_handler_load_s": round(stock_load_s, 3)},
        "pairs": pairs,
        "threads": cpu["threads"],
        "cpu": cpu,
        "loadavg_1m": {"before": load_before, "after": load_after},
    }


# --------------------------------------------------------------------------- image


def image_prompts(n: int) -> list[str]:
    from models.zoo import catalog_corpus as cc

    combos = cc.heldout_combinations()
    return [f"a {c} {m} {i}" for c, m, i in (combos[k % len(combos)] for k in range(n))]


def bench_image(tmp: Path, pairs: int, naive_items: int, quick: bool, cpu: dict[str, Any],
                clocks: tuple[str, ...] = ("wall",)) -> dict[str, Any]:
    import torch

    from models.runners import ImageRunner
    from models.worker import AUTO_BATCH

    start_bs, cap = AUTO_BATCH["image"]
    generation = dict(IMAGE_PARAMS)
    runner = ImageRunner(IMAGE_MODEL, generation=generation, precision="fp32", device="cpu")
    pipe = runner.pipe
    prompts = image_prompts(IMAGE_ITEMS)
    seeds = list(range(len(prompts)))
    stride = max(1, len(prompts) // naive_items)
    naive_idx = list(range(0, len(prompts), stride))[:naive_items]

    def naive() -> tuple[int, Stopwatch]:
        with Stopwatch() as lap:
            for i in naive_idx:
                pipe(prompts[i], generator=torch.Generator("cpu").manual_seed(seeds[i]), **IMAGE_PARAMS)
        return len(naive_idx), lap

    n_batches = -(-len(prompts) // cap)

    def limit() -> tuple[int, Stopwatch]:
        with Stopwatch() as lap, torch.inference_mode():
            for b in range(n_batches):
                idx = [(b * cap + i) % len(prompts) for i in range(cap)]
                pipe(prompt=[prompts[i] for i in idx], generator=[torch.Generator("cpu").manual_seed(seeds[i]) for i in idx],
                     output_type="pil", **IMAGE_PARAMS)
        return n_batches * cap, lap

    genbatch = GenbatchVariant(tmp, "image", runner, "tiny-image", IMAGE_MODEL, {**generation, "batch_size": "auto"}, prompts)
    print(f"[image] {len(prompts)} prompts; warm-up", file=sys.stderr, flush=True)
    load_before = load_average()
    variants: dict[str, Variant] = {"genbatch": genbatch, "naive": naive, "limit": limit}
    saved = naive_idx
    naive_idx = naive_idx[:4]
    for fn in variants.values():
        fn()
    naive_idx = saved

    timings = Timings()
    interleave(variants, pairs, timings, "image")
    load_after = load_average()
    sizes = [len(b) for b in committed_batches(genbatch.last_run_dir)]
    ratios = {"vs_naive": ("genbatch", "naive"), "of_limit": ("genbatch", "limit"),
              "limit_vs_naive": ("limit", "naive")}  # the last: the most any batching at this cap can give
    return {
        "bench": "worker_throughput",
        "task": "image",
        "model": "tiny-image@v1",
        "items": len(prompts),
        "quick": quick,
        **by_clock(timings, clocks, ratios, TARGETS["image"]),
        "params": IMAGE_PARAMS,
        "batch_sizes": {"genbatch": sizes, "limit": [cap] * n_batches},
        "naive_items": len(naive_idx),
        "naive_scaled": len(naive_idx) != len(prompts),
        "limit_items": n_batches * cap,
        "pairs": pairs,
        "threads": cpu["threads"],
        "cpu": cpu,
        "loadavg_1m": {"before": load_before, "after": load_after},
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_throughput", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~40 s idle): 3 repetitions, naive on small subsets")
    parser.add_argument("--task", choices=("text", "image", "all"), default="all")
    parser.add_argument("--pairs", type=int, help="interleaved repetitions (default 7, quick 3)")
    parser.add_argument("--clock", choices=("wall", "cpu", "both"), default="wall",
                        help="ratios of wall time, of the process's CPU time (time.process_time), or both")
    parser.add_argument("--shortcut", choices=("on", "off", "both"), default="on",
                        help="text: the runner's last-layer prefill shortcut on, off, or both as two variants")
    args = parser.parse_args(argv)
    clocks = CLOCKS if args.clock == "both" else (args.clock,)
    cpu = pin_process()
    quiet_libraries()
    pairs = args.pairs or (3 if args.quick else 7)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genbatch-bench-") as tmp:
        if args.task in ("text", "all"):
            line = bench_text(Path(tmp), pairs, 40 if args.quick else NAIVE_TEXT_ITEMS, args.quick, cpu,
                              clocks, args.shortcut)
            print(json.dumps(line), flush=True)
        if args.task in ("image", "all"):
            line = bench_image(Path(tmp), pairs, 12 if args.quick else NAIVE_IMAGE_ITEMS, args.quick, cpu, clocks)
            print(json.dumps(line), flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Re-enter through the importable module so everything Beam pickles is pickled by reference.
    from bench.worker_throughput import main as _main

    raise SystemExit(_main())
