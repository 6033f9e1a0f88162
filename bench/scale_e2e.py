"""The whole batch DAG at scale: N generated rows in many input files, orchestrated vs the stages run directly.

``python -m bench.scale_e2e [--sizes 100000,1000000] [--files 64] [--shards 8] [--max-new-tokens 1]``

Per size, ``--files`` input files of heavy-tailed catalog prompts are generated under a temp dir (JSONL,
every fourth one gzip-compressed; a few bad rows: a missing prompt every 10,007 rows) and a spec runs the
zoo's catalog-copy (its production alias, the zoo registered in a temp registry), greedy, with a tiny
``max_new_tokens``, on ``input.uri`` = a glob over the files (``--files 1``: one plain file), with
``input.row_rules: pipeline`` (the row rules in the Beam job: what an input this size needs). Two legs, each
a fresh child process pinned to one core (affinity is inherited by every process it starts), one after
the other, the same spec (``wall_s`` is the run: the stage sequence, or ``dag.test``'s trigger → success,
without the one-off metadata DB set-up of the fresh home; ``process_s`` is the whole child):

direct    ``bench.overhead``'s direct leg: the core's stage sequence in one process, exactly the functions
          the operators call, the worker as a subprocess per shard (the stages run directly);
embedded  ``bench.overhead``'s embedded leg: ``dag.test()`` on a fresh SQLite home, as ``genbatch run`` does.

While a leg runs, the parent walks the leg's process tree every 0.2 s (psutil) and keeps each process's
``VmHWM`` (the kernel's peak-RSS high-water mark, so a peak between two polls is not missed), by role:
``airflow`` (the leg's own process: ``dag.test`` runs every task in it; in the direct leg, the process
that calls the stages), ``worker`` (``genbatch worker``), ``beam`` (a ``beam_jobs.preprocess`` process),
``stage`` (``genbatch stage``: quality_gate and publish of a run over ``execution.inline_max_rows``, as
worker commands), ``other``. Per stage, items/s = rows ÷ the task's duration (generate: generated items ÷ the span from
the first shard's start to the last one's end). Accounting: generated + errored + rejected == rows, read
from the run's manifest-side counts (nothing lost, nothing doubled).

Targets (issue 17): the airflow process's peak RSS at the largest size ≤ 1.2× at the smallest, and the
embedded run's wall ≤ 1.3× the direct one's at each size. Prints one JSON line; figures are reported,
never asserted (tests run ``--sizes 300 --files 4`` as a smoke).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_RSS_RATIO = 1.2
TARGET_WALL_RATIO = 1.3
POLL_S = 0.2
LEG_TIMEOUT_S = 6 * 3600
BAD_ROW_EVERY = 10_007  # a row without a prompt: a reject with its rule


def write_inputs(folder: Path, rows: int, files: int, seed: int = 11) -> dict[str, Any]:
    """``rows`` rows over ``files`` files (every fourth gzip); returns the input URI and the bad-row count."""
    from bench.preprocess_scale import COLOURS, ITEMS, MATERIALS, WORDS

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    bad = 0
    for f in range(files):
        name = folder / (f"part-{f:05d}.jsonl.gz" if f % 4 == 3 and files > 1 else f"part-{f:05d}.jsonl")
        lines = []
        for i in range(f * per_file, min(rows, (f + 1) * per_file)):
            extra = min(int(rng.paretovariate(1.3)) - 1, 30)
            words = " ".join(rng.choice(WORDS) for _ in range(extra))
            row: dict[str, Any] = {"id": f"sku-{i:09d}", "category": "catalog",
                                   "prompt": f"colour: {rng.choice(COLOURS)} | material: {rng.choice(MATERIALS)} | "
                                             f"item: {rng.choice(ITEMS)} {words}\ndescription:"}
            if i % BAD_ROW_EVERY == BAD_ROW_EVERY - 1:
                del row["prompt"]
                bad += 1
            lines.append(json.dumps(row))
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        name.write_bytes(gzip.compress(data, mtime=0) if name.suffix == ".gz" else data)
    uri = str(folder / "part-*") if files > 1 else str(folder / "part-00000.jsonl")
    return {"uri": uri, "bad_rows": bad}


def make_spec(work: Path, input_uri: str, shards: int, max_new_tokens: int, run_id: str,
              row_rules: str = "pipeline") -> dict[str, Any]:
    from bench.overhead import make_spec as overhead_spec

    data = overhead_spec(work, 1, shards, run_id)  # the catalog example's spec, outputs and registry set
    data["input"]["uri"] = input_uri
    data["input"]["row_rules"] = row_rules
    data["generation"]["max_new_tokens"] = max_new_tokens
    # A 1-token description repeats across items and mentions no attribute: the content gates would stop the
    # run by design, so this spec keeps the default gates minus those two (the quality stage still runs).
    data["quality"] = {"max_duplicate_output_rate": 1.0}
    return data


def role(cmdline: list[str], root_pid: int, pid: int) -> str:
    text = " ".join(cmdline)
    if pid == root_pid:
        return "airflow"
    if "beam_jobs.preprocess" in text:
        return "beam"
    if " worker" in text or "models.worker" in text:
        return "worker"
    if " stage " in text:
        return "stage"
    return "other"


class PeakRss:
    """Polls a process tree; the highest VmHWM seen per role (MiB) and per process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.by_role: dict[str, float] = {}
        self.processes = 0
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    hwm_kb = _vm_hwm_kb(proc.pid)
                    kind = role(proc.cmdline(), self.pid, proc.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
                    continue
                self._seen.add(proc.pid)
                self.by_role[kind] = max(self.by_role.get(kind, 0.0), round(hwm_kb / 1024, 1))
            self.processes = len(self._seen)
            self._stop.wait(POLL_S)


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _pin() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def run_leg(leg: str, spec: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    """One leg in a pinned child (``python -m bench.overhead _<leg>``); its result, wall and peak RSS."""
    from bench.overhead import allowed_prefixes

    spec_file, out = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    spec_file.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if not (k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME")}
    env["GENBATCH_ALLOWED_PREFIXES"] = allowed_prefixes(work)
    cmd = [sys.executable, "-m", "bench.overhead", f"_{leg}", "--spec-json", str(spec_file), "--out", str(out),
           "--home", str(work / f"{tag}-home")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_pin)
    with PeakRss(proc.pid) as rss:
        output, _ = proc.communicate(timeout=LEG_TIMEOUT_S)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{leg} leg failed (exit {proc.returncode}):\n{output.decode()[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    # The run itself: trigger → success for dag.test (not the one-off metadata DB set-up of a fresh home), the
    # whole stage sequence for the direct leg.
    run_s = result["done"] - result["trigger"] if leg == "embedded" else result["wall_s"]
    return {"wall_s": round(run_s, 2), "process_s": round(wall, 2), "peak_rss_mib": rss.by_role,
            "processes": rss.processes, "result": result}


def counts(spec: dict[str, Any]) -> dict[str, Any]:
    """The run's core counts (input, rejected, generated, errored, lost, duplicated) read back from its files
    by ``genbatch reconcile``'s own function, and its problems (none when everything holds)."""
    from genbatch.run.layout import RunLayout
    from genbatch.run.reconcile import reconcile

    report = reconcile(RunLayout.for_run(spec["output"]["uri"], spec["run_id"]).root, check_consumer=False)
    return {**report.counts(), "problems": report.problems[:5]}


def stage_rates(leg: str, leg_result: dict[str, Any], rows: int, generated: int) -> dict[str, float]:
    """items/s per stage from the leg's task durations."""
    result = leg_result["result"]
    if leg == "direct":
        durations = {k: float(v) for k, v in result["tasks"].items()}
        shards = [v for k, v in durations.items() if k.startswith("generate_local[")]
        generate_s = sum(shards)  # the direct leg runs the shards one after the other
    else:
        records = [r for r in result["records"] if r["start"] is not None and r["end"] is not None]
        durations = {r["task_id"] + (f"[{r['map_index']}]" if r["map_index"] >= 0 else ""): r["end"] - r["start"]
                     for r in records}
        shard_records = [r for r in records if r["task_id"] == "generate_local"]
        generate_s = (max(r["end"] for r in shard_records) - min(r["start"] for r in shard_records)
                      if shard_records else 0.0)
    rates = {task: round(rows / durations[task], 1) for task in ("validate_input", "preprocess")
             if durations.get(task)}
    if generate_s:
        rates["generate"] = round(generated / generate_s, 1)
    return rates


def measure(sizes: list[int], files: int, shards: int, max_new_tokens: int, row_rules: str = "pipeline"
            ) -> dict[str, Any]:
    from devstack.airflow_stack import REGISTRY
    from models.zoo.seed import ensure_zoo_registered

    ensure_zoo_registered(str(REGISTRY))
    out: dict[str, Any] = {"bench": "scale_e2e", "files": files, "shards": shards, "max_new_tokens": max_new_tokens,
                           "row_rules": row_rules, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="genbatch-scale-e2e-") as tmp:
        for rows in sizes:
            work = Path(tmp) / f"rows-{rows}"
            inputs = write_inputs(work / "input", rows, files)
            size: dict[str, Any] = {"bad_rows": inputs["bad_rows"]}
            for leg in ("direct", "embedded"):
                spec = make_spec(work, inputs["uri"], shards, max_new_tokens, f"scale-{leg}-{rows}", row_rules)
                print(f"scale_e2e: {rows} rows, {leg} ...", file=sys.stderr, flush=True)
                res = run_leg(leg, spec, work, f"{leg}-{rows}")
                n = counts(spec)
                accounted = (n["generated"] + n["errored"] + n["rejected"] == rows and not n["problems"]
                             and n["items_lost"] == n["items_duplicated"] == 0)
                size[leg] = {"wall_s": res["wall_s"], "process_s": res["process_s"], "peak_rss_mib": res["peak_rss_mib"],
                             "processes": res["processes"], "counts": n, "accounted": accounted,
                             "items_per_s": stage_rates(leg, res, rows, n.get("generated", 0))}
                print(f"scale_e2e: {rows} rows, {leg}: {json.dumps(size[leg])}", file=sys.stderr, flush=True)
            size["wall_ratio_embedded_vs_direct"] = round(size["embedded"]["wall_s"] / size["direct"]["wall_s"], 3)
            out["sizes"][str(rows)] = size
    small, large = str(min(sizes)), str(max(sizes))
    rss = {s: out["sizes"][s]["embedded"]["peak_rss_mib"].get("airflow") for s in (small, large)}
    out["airflow_rss_ratio_largest_vs_smallest"] = (round(rss[large] / rss[small], 3)
                                                     if rss[small] and rss[large] else None)
    out["targets"] = {"airflow_rss_ratio": TARGET_RSS_RATIO, "wall_ratio": TARGET_WALL_RATIO}
    out["pass"] = {"rss": (out["airflow_rss_ratio_largest_vs_smallest"] or 99) <= TARGET_RSS_RATIO,
                   "wall": all(v["wall_ratio_embedded_vs_direct"] <= TARGET_WALL_RATIO for v in out["sizes"].values()),
                   "accounted": all(v[leg]["accounted"] for v in out["sizes"].values() for leg in ("direct", "embedded"))}
    out["cpus"] = os.cpu_count()
    out["load"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale_e2e", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--files", type=int, default=64, help="input files per size (default 64)")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=1)
    parser.add_argument("--row-rules", default="pipeline", choices=["pipeline", "validate"],
                        help="input.row_rules: pipeline (default; the row rules in the Beam job) or validate "
                             "(every row read in the validate_input task)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(json.dumps(measure(sizes, args.files, args.shards, args.max_new_tokens, args.row_rules)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
