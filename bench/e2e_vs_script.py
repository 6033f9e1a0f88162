"""A run's fixed cost: ``genbatch run`` and the worker against the script a competent user writes instead.

``python -m bench.e2e_vs_script [--sizes 300,3000] [--repeat 5] [--max-new-tokens 32] [--baseline CHECKOUT] [--floor]``

The baseline (``_script`` below, run as its own process) is what a competent user writes instead of
genbatch: load the model (safetensors, local files only), sort the prompts by token length, left-pad,
batches of 64, ``model.generate`` greedy under ``torch.inference_mode``, write one JSONL line per item.

Per size (held-out heavy-tailed catalog prompts, ``bench.worker_throughput.text_prompts``; catalog-copy
v2; greedy; ``--max-new-tokens`` new tokens), three whole processes, each pinned to one core with one
intra-op thread (``OMP_NUM_THREADS=1``; affinity is inherited by every process they start), interleaved
(the order rotates between repetitions):

run     ``python -m genbatch run SPEC`` (embedded Airflow, 1 shard), in a work dir whose embedded Airflow
        home was set up once before the first repetition (a user's second run; the one-off metadata DB
        migration is not a per-run cost); per task durations from that home's SQLite DB;
worker  ``python -m genbatch worker`` on a prepared 1-shard run dir (what ``generate_local`` starts);
script  the baseline.

Reports per size and leg the median wall time [min, max]; the ratios run ÷ script and worker ÷ script;
per leg the fixed cost (intercept) and per-item slope of the line through the medians at the smallest
and the largest size; the same three from CPU time (user + system of the leg's process tree: ``cpu_s``,
``cpu_ratios``, ``cpu_lines``), the steadier figure when another tenant loads the machine; the median
duration of each task of the run at each size. Figures are reported, never asserted. One JSON line to
stdout, progress to stderr.

``--baseline CHECKOUT`` (another checkout of genbatch, e.g. ``git worktree add /tmp/before <commit>``) also
runs its run and worker legs, interleaved with the others in the same repetitions, and reports this
checkout's run and worker against it (``baseline``): a before/after that another tenant's load shifts for
both sides alike, instead of two bench runs minutes apart. Its run has its own embedded Airflow home.

``--floor`` also measures ``bench.start_up_floor``'s floor (the libraries' start-up, no work of genbatch's)
once per repetition, interleaved with the other legs, and reports it with the run's time above it at each
size and the run's fixed cost above it (``floor``): the share of a run that genbatch's code can still cut.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL = "catalog-copy"
MODEL_VERSION = 2
BATCH = 64
LEGS = ("run", "worker", "script")
LEG_TIMEOUT_S = 1800


def _script(model_dir: str, prompts_file: str, out_file: str, max_new_tokens: int) -> None:
    """The competent user's script: sorted, left-padded batches of 64 through ``generate``, JSONL out."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, use_safetensors=True).eval()
    rows = [json.loads(line) for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    lengths = [len(ids) for ids in tokenizer([r["prompt"] for r in rows])["input_ids"]]
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    with open(out_file, "w", encoding="utf-8") as out, torch.inference_mode():
        for start in range(0, len(order), BATCH):
            batch = [rows[i] for i in order[start:start + BATCH]]
            enc = tokenizer([r["prompt"] for r in batch], return_tensors="pt", padding=True)
            generated = model.generate(**enc, max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for row, text in zip(batch, texts, strict=True):
                out.write(json.dumps({"id": row["id"], "output": text}) + "\n")


def _pin() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _env(work: Path, checkout: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not (k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GENBATCH_ALLOWED_PREFIXES=f"{work},{checkout}",
               PYTHONPATH=str(checkout))
    return env


def _side(leg: str, ctx: dict[str, Any], work: Path) -> tuple[str, Path, Path]:
    """A leg's kind (run, worker, script), the checkout it runs and its working dir (the embedded home's parent):
    ``run@baseline`` is the baseline checkout's run, in its own dir."""
    kind, _, side = leg.partition("@")
    return (kind, ctx["baseline"], work / "baseline") if side else (kind, REPO, work)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process and every process it waited for) of one whole
    pinned process; raises with its output tail when it fails. CPU time is the steadier figure on a shared
    machine: another tenant's load stretches the wall time of a pinned process, much less its CPU time."""
    cpu0, start = _children_cpu_s(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=LEG_TIMEOUT_S,
                          preexec_fn=_pin, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    return wall, cpu


def task_durations(home: Path, run_id: str) -> dict[str, float]:
    """Each task's duration in the embedded run ``run_id`` (the conf's run id names the run dir, not the DAG
    run: the latest DAG run of batch_generation is the one just made); mapped tasks summed."""
    with sqlite3.connect(home / "airflow.db") as db:
        latest = db.execute("SELECT run_id FROM dag_run WHERE dag_id = 'batch_generation' "
                            "ORDER BY id DESC LIMIT 1").fetchone()[0]
        rows = db.execute("SELECT task_id, duration FROM task_instance WHERE dag_id = 'batch_generation' "
                          "AND run_id = ? AND duration IS NOT NULL", (latest,)).fetchall()
    out: dict[str, float] = {}
    for task_id, duration in rows:
        out[task_id] = out.get(task_id, 0.0) + float(duration)
    return out


def line(points: dict[int, float]) -> dict[str, float]:
    """Fixed cost (s) and per-item slope (ms) of the line through the smallest and the largest size."""
    small, large = min(points), max(points)
    slope = (points[large] - points[small]) / (large - small) if large > small else 0.0
    return {"fixed_s": round(points[small] - slope * small, 2), "per_item_ms": round(slope * 1000, 3)}


def setup(work: Path, sizes: list[int], max_new_tokens: int, baseline: Path | None = None) -> dict[str, Any]:
    """Registry, prompts, specs and worker run dirs for every size; the embedded home migrated once."""
    from bench.worker_throughput import prepare_run_dir, shard_items, text_prompts
    from models.registry import resolve
    from models.zoo.seed import ensure_zoo_registered

    registry = work / "registry"
    ensure_zoo_registered(str(registry))
    model_dir = resolve(str(registry), MODEL, version=MODEL_VERSION).uri
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    prompts = text_prompts(tokenizer, max(sizes))
    generation = {"max_new_tokens": max_new_tokens, "temperature": 0.0, "batch_size": "auto"}
    per_size: dict[int, dict[str, Any]] = {}
    for n in sizes:
        folder = work / f"size-{n}"
        folder.mkdir(parents=True)
        rows = [{"id": f"item-{i:05d}", "prompt": p} for i, p in enumerate(prompts[:n])]
        (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = {"task": "text", "input": {"uri": str(folder / "items.jsonl")},
                "model": {"name": MODEL, "version": MODEL_VERSION, "registry": str(registry)},
                "generation": generation, "sharding": {"num_shards": 1}, "execution": {"backend": "local"},
                "quality": {"max_duplicate_output_rate": 1.0}, "output": {"uri": str(folder / "runs")}}
        (folder / "spec.json").write_text(json.dumps(spec))
        per_size[n] = {"folder": folder, "spec": folder / "spec.json", "model_dir": str(model_dir),
                       "worker_items": shard_items(prompts[:n]), "generation": generation}
    # A user's second run: the embedded home's metadata DB exists (genbatch run migrates it once).
    for checkout, cwd in [(REPO, work)] + ([(baseline, work / "baseline")] if baseline else []):
        cwd.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-c", "from genbatch.cli import embedded as e; h = e.STATE_DIR / 'airflow'; "
                        "e.configure(h); e.ensure_db(h)"], cwd=cwd, env=_env(work, checkout), check=True, timeout=600)
    return {"registry": registry, "sizes": per_size, "prepare_run_dir": prepare_run_dir, "baseline": baseline}


def one(leg: str, n: int, rep: int, ctx: dict[str, Any], work: Path, max_new_tokens: int) -> dict[str, Any]:
    size = ctx["sizes"][n]
    kind, checkout, cwd = _side(leg, ctx, work)
    env = _env(work, checkout)
    tag = leg.replace("@", "-")
    if kind == "run":
        run_id = f"e2e-{tag}-{n}-{rep}"
        wall, cpu = timed([sys.executable, "-m", "genbatch", "run", str(size["spec"]), "--run-id", run_id], cwd, env)
        return {"wall_s": wall, "cpu_s": cpu, "tasks": task_durations(cwd / ".genbatch" / "airflow", run_id)}
    if kind == "worker":
        run_dir = ctx["prepare_run_dir"](size["folder"] / f"{tag}-{rep}", "text", MODEL, Path(size["model_dir"]),
                                         size["generation"], size["worker_items"])
        wall, cpu = timed([sys.executable, "-m", "genbatch", "worker", "--run-dir", run_dir, "--shard", "0"],
                               cwd, env)
        return {"wall_s": wall, "cpu_s": cpu}
    out = size["folder"] / f"script-{rep}.jsonl"
    wall, cpu = timed([sys.executable, "-m", "bench.e2e_vs_script", "_script", "--model-dir", size["model_dir"],
                             "--prompts", str(size["folder"] / "items.jsonl"), "--out", str(out),
                             "--max-new-tokens", str(max_new_tokens)], work, env)
    written = sum(1 for _ in out.open())
    if written != n:
        raise RuntimeError(f"the script wrote {written} of {n} items")
    return {"wall_s": wall, "cpu_s": cpu}


def _vs_script(legs: dict[str, float]) -> dict[str, float]:
    return {f"{leg}_vs_script": round(legs[leg] / legs["script"], 3) for leg in ("run", "worker")}


def measure(sizes: list[int], repeat: int, max_new_tokens: int, baseline: Path | None = None,
            floor: bool = False) -> dict[str, Any]:
    legs = LEGS + (("run@baseline", "worker@baseline") if baseline else ()) + (("floor",) if floor else ())
    floors: list[float] = []
    timed_legs = [leg for leg in legs if leg != "floor"]  # the floor is not per size: ``floors`` holds it
    walls: dict[int, dict[str, list[float]]] = {n: {leg: [] for leg in timed_legs} for n in sizes}
    cpus: dict[int, dict[str, list[float]]] = {n: {leg: [] for leg in timed_legs} for n in sizes}
    tasks: dict[str, dict[int, dict[str, list[float]]]] = {leg: {n: {} for n in sizes} for leg in ("run", "run@baseline")}
    with tempfile.TemporaryDirectory(prefix="genbatch-e2e-vs-script-") as tmp:
        work = Path(tmp)
        ctx = setup(work, sizes, max_new_tokens, baseline)
        if floor:
            from bench.start_up_floor import floor_once, prepare_home

            (work / "floor").mkdir()
            floor_home = prepare_home(work / "floor")
        for rep in range(repeat):
            order = legs[rep % len(legs):] + legs[:rep % len(legs)]
            for n in sizes:
                for leg in order:
                    if leg == "floor":  # the same at every size: measured once per repetition
                        if n == sizes[0]:
                            floors.append(floor_once(floor_home))
                            print(f"e2e_vs_script: rep {rep} floor: {floors[-1]:.2f} s", file=sys.stderr, flush=True)
                        continue
                    res = one(leg, n, rep, ctx, work, max_new_tokens)
                    walls[n][leg].append(res["wall_s"])
                    cpus[n][leg].append(res["cpu_s"])
                    for task, seconds in res.get("tasks", {}).items():
                        tasks[leg][n].setdefault(task, []).append(seconds)
                    print(f"e2e_vs_script: rep {rep} size {n} {leg}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)
    medians = {n: {leg: statistics.median(v) for leg, v in walls[n].items()} for n in sizes}
    cpu_medians = {n: {leg: statistics.median(v) for leg, v in cpus[n].items()} for n in sizes}
    result = {
        "bench": "e2e_vs_script", "sizes": sizes, "repeat": repeat, "max_new_tokens": max_new_tokens,
        "model": f"{MODEL}@{MODEL_VERSION}",
        "wall_s": {str(n): {leg: {"median": round(medians[n][leg], 2), "min": round(min(v), 2),
                                  "max": round(max(v), 2)} for leg, v in walls[n].items()} for n in sizes},
        "ratios": {str(n): _vs_script(medians[n]) for n in sizes},
        "lines": {leg: line({n: medians[n][leg] for n in sizes}) for leg in LEGS},
        "cpu_s": {str(n): {leg: round(cpu_medians[n][leg], 2) for leg in LEGS} for n in sizes},
        "cpu_ratios": {str(n): _vs_script(cpu_medians[n]) for n in sizes},
        "cpu_lines": {leg: line({n: cpu_medians[n][leg] for n in sizes}) for leg in LEGS},
        "run_tasks_median_s": _task_medians(tasks["run"]),
        "cpus": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()],
    }
    if baseline:
        result["baseline"] = {
            "checkout": str(baseline), "commit": _commit(baseline),
            "wall_s": {str(n): {leg: round(medians[n][f"{leg}@baseline"], 2) for leg in ("run", "worker")} for n in sizes},
            "cpu_s": {str(n): {leg: round(cpu_medians[n][f"{leg}@baseline"], 2) for leg in ("run", "worker")}
                      for n in sizes},
            "vs_baseline": {str(n): _vs_baseline(medians[n]) for n in sizes},
            "cpu_vs_baseline": {str(n): _vs_baseline(cpu_medians[n]) for n in sizes},
            "run_tasks_median_s": _task_medians(tasks["run@baseline"]),
        }
    if floor:
        result["floor"] = _above_floor(floors, {n: medians[n]["run"] for n in sizes})
    result["commit"] = _commit(REPO)
    return result


def _above_floor(floors: list[float], run: dict[int, float]) -> dict[str, Any]:
    """The floor (``bench.start_up_floor``) measured in the same repetitions, and the run's time above it:
    what genbatch's own work and Airflow's per-run work on real tasks cost, with the libraries' start-up out."""
    median = statistics.median(floors)
    return {"wall_s": round(median, 2), "min": round(min(floors), 2), "max": round(max(floors), 2),
            "run_above_floor_s": {str(n): round(seconds - median, 2) for n, seconds in run.items()},
            "run_fixed_above_floor_s": round(line(run)["fixed_s"] - median, 2)}


def _vs_baseline(legs: dict[str, float]) -> dict[str, float]:
    """This checkout's run and worker ÷ the baseline checkout's (below 1: faster than the baseline)."""
    return {leg: round(legs[leg] / legs[f"{leg}@baseline"], 3) for leg in ("run", "worker")}


def _task_medians(tasks: dict[int, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {str(n): {t: round(statistics.median(v), 2) for t, v in sorted(per.items())} for n, per in tasks.items()}


def _commit(checkout: Path) -> str | None:
    proc = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.e2e_vs_script", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("leg", nargs="?", default="bench", choices=["bench", "_script"], help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="300,3000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--baseline", type=Path, help="another genbatch checkout to measure against, interleaved")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench.start_up_floor's floor in the same repetitions, and the run above it")
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg == "_script":
        _script(args.model_dir, args.prompts, args.out, args.max_new_tokens)
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    baseline = args.baseline.resolve() if args.baseline else None
    print(json.dumps(measure(sizes, args.repeat, args.max_new_tokens, baseline, args.floor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
