"""Preprocess at scale: rows/s and peak RSS of the Beam preprocess job at 10k, 100k and 1M rows.

``python -m bench.preprocess_scale [--sizes 10000,100000,1000000] [--shards 16] [--token-counts auto]``

Each size runs ``python -m beam_jobs.preprocess --run-dir ...`` (in-process FnApiRunner, one
worker) in a fresh child process pinned to one core; its peak RSS comes from ``os.wait4`` (the
rusage of that child alone). The input is generated straight into ``validation/accepted.jsonl``
(the Beam job's input; validation is a separate stage) with heavy-tailed prompt lengths, 0.2%
duplicate ids and 0.1% prompts over the token budget, and the model is the zoo's catalog-copy
v1 registered in a temp registry, so tokens are counted with its real tokenizer.

Prints one JSON line: per size rows/s, wall seconds and peak RSS, and the ratios
``rss_ratio_1m_vs_100k`` (target ≤ 1.2) and the RSS growth per million rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEXT_MODEL = REPO / "models" / "zoo" / "catalog-copy" / "v1"
COLOURS = ["red", "navy", "olive", "teal", "ivory", "black", "amber", "plum"]
MATERIALS = ["wool", "canvas", "steel", "oak", "linen", "leather", "glass"]
ITEMS = ["scarf", "tote", "shelf", "blanket", "lamp", "mug", "chair", "bag"]
WORDS = ["soft", "warm", "classic", "handmade", "durable", "light", "modern", "gift"]
TARGET_RSS_RATIO = 1.2


def _pin() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def write_accepted(path: Path, rows: int, seed: int = 7) -> None:
    """Heavy-tailed prompts (Pareto word counts), a few duplicate ids and over-budget prompts."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            extra = min(int(rng.paretovariate(1.3)) - 1, 30)
            if i % 1000 == 999:
                extra = 120  # over catalog-copy's budget (128 positions - 16 new tokens)
            words = " ".join(rng.choice(WORDS) for _ in range(extra))
            prompt = (f"colour: {rng.choice(COLOURS)} | material: {rng.choice(MATERIALS)} | "
                      f"item: {rng.choice(ITEMS)} {words}\ndescription:")
            ident = f"sku-{i - 1:08d}" if i % 500 == 499 else f"sku-{i:08d}"
            row = {"id": ident, "prompt": prompt, "category": "catalog"}
            out.write(json.dumps({"index": i, "row": row}) + "\n")


def prepare(root: Path, rows: int, shards: int, registry: str) -> str:
    from genbatch.run.layout import RunLayout
    from genbatch.run.spec import parse_spec
    from genbatch.run.state import RunState, write_run_state
    from models.registry import resolve

    spec = parse_spec({
        "task": "text",
        "input": {"uri": "generated.jsonl"},
        "model": {"name": "catalog-copy", "version": 1, "registry": registry},
        "generation": {"max_new_tokens": 16},
        "sharding": {"num_shards": shards},
        "output": {"uri": str(root)},
    })
    run_id = f"scale-{rows}"
    state = RunState(run_id=run_id, spec=spec, model=resolve(registry, "catalog-copy", version=1),
                     layout=RunLayout.for_run(str(root), run_id), num_shards=shards)
    write_run_state(state)
    write_accepted(Path(state.layout.validation_accepted), rows)
    return state.layout.root


def run_child(run_dir: str, token_counts: str) -> dict[str, Any]:
    """The Beam job in a fresh, pinned child; wall time and that child's own peak RSS."""
    cmd = [sys.executable, "-m", "beam_jobs.preprocess", "--run-dir", run_dir, f"--token-counts={token_counts}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=_pin)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"preprocess of {run_dir} failed with exit code {proc.returncode}")
    plan = json.loads(out.decode().strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "plan": plan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.preprocess_scale")
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--token-counts", default="auto", choices=["auto", "tokenizer", "estimate"])
    parser.add_argument("--workdir", default=None, help="keep the generated runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    from models.registry import register_version

    with tempfile.TemporaryDirectory(prefix="genbatch-scale-", dir=args.workdir) as work:
        root = Path(work)
        registry = str(root / "registry")
        register_version(registry, "catalog-copy", TEXT_MODEL)
        results: dict[str, Any] = {}
        for rows in sizes:
            run_dir = prepare(root / "runs", rows, args.shards, registry)
            print(f"preprocess_scale: {rows} rows ...", file=sys.stderr, flush=True)
            res = run_child(run_dir, args.token_counts)
            plan = res.pop("plan")
            res.update({
                "rows": rows,
                "rows_per_s": round(rows / res["wall_s"], 1),
                "sharded": plan["items"],
                "rejects_by_rule": plan["rejects_by_rule"],
                "makespan_ratio": round(plan["makespan_ratio"], 4),
                "token_counts": plan["tokens"]["token_counts"],
            })
            results[str(rows)] = res
            print(f"preprocess_scale: {json.dumps(res)}", file=sys.stderr, flush=True)
            subprocess.run(["rm", "-rf", run_dir], check=False)
    line: dict[str, Any] = {"benchmark": "preprocess_scale", "shards": args.shards, "cores": 1,
                            "runner": "FnApiRunner (in-process, 1 worker)", "sizes": results}
    big, mid = results.get("1000000"), results.get("100000")
    if big and mid:
        ratio = big["peak_rss_mb"] / mid["peak_rss_mb"]
        line["rss_ratio_1m_vs_100k"] = round(ratio, 3)
        line["rss_growth_mb_per_1m_rows"] = round((big["peak_rss_mb"] - mid["peak_rss_mb"]) / 0.9, 1)
        line["target_rss_ratio"] = TARGET_RSS_RATIO
        line["pass"] = ratio <= TARGET_RSS_RATIO
    print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
