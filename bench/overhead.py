"""Orchestration overhead: end-to-end wall time of a small run minus the in-task compute, per task.

``python -m bench.overhead [--rows 40] [--shards 2] [--repeat 1] [--modes direct,embedded,stack]``

One small run of the catalog example (its spec, the first ``--rows`` rows of
``examples/catalog/items.jsonl``, ``--shards`` shards, the zoo's catalog-copy at its production
alias) is executed three ways per repetition, in alternating order:

direct    no orchestrator: a child process calls, in DAG order, exactly the functions the operators
          call (``prepare_run``, ``validate_input``, ``beam_jobs.preprocess.run``,
          ``check_cost_ceiling``, the backend choice, ``run_worker_process`` per shard one after
          the other, ``quality_gate``, ``publish``, the canary verdict), each timed with its own
          lazy imports, as the operators import inside ``execute``. This is the in-task compute.
embedded  ``dag.test()`` on a fresh SQLite home in a child process (what ``genbatch run`` does);
          trigger = just before the DAG file is parsed, success = ``dag.test`` returns.
stack     the real local Airflow (``devstack.airflow_stack.running_stack``, the integration tests'
          helper: PostgreSQL + api-server + scheduler + dag-processor + triggerer, LocalExecutor),
          started once for all repetitions and stopped at the end; trigger = the REST POST,
          success = the first poll (every 0.25 s) that sees ``state == success``.

Per task instance (Airflow's own records: ``dag.test``'s DagRun TIs, the REST API's
``/dags/{dag_id}/dagRuns/{run_id}/taskInstances``):

* ``duration``: end − start of the task instance;
* ``compute``: the in-task work. For ``generate_local[k]`` the worker's own record in that very run
  (shard manifest ``timings.wall_s``: model load + generation + commit, of which ``compute_s`` is
  generation) plus the launch cost of its subprocess (direct ``run_worker_process`` wall − its
  worker's ``wall_s``: interpreter and torch start-up, which any process-per-shard design pays);
  for every other task, that task's function timed in the direct leg of the same repetition;
* ``queued_to_start``: start − queued (the executor and the task process starting), where recorded;
* ``gap``: start − when it could have started: the latest end among its upstream tasks and any
  other task instance that ended before it started (so a shard waiting for a pool slot, or for
  ``dag.test``'s one-at-a-time loop, is not counted as scheduling delay); the first task's gap
  runs from the trigger;
* ``overhead`` = gap + duration − compute.

Totals: ``wall`` (trigger → success); ``compute_sum`` (Σ compute); ``compute_busy`` (the union of
the intervals [end − compute, end]: the time at least one task was doing its own work, = the sum
when tasks run one at a time); ``overhead`` = wall − compute_busy and its fraction of wall;
``gaps`` (Σ gap + the tail from the last task's end to observed success: scheduling latency that
needs no compute estimate). Figures are wall times on a shared machine: reported, never asserted.
Prints one JSON line (medians over repetitions, with min/max) to stdout and a table to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = REPO / "examples" / "catalog" / "spec.yaml"
EXAMPLE_ITEMS = REPO / "examples" / "catalog" / "items.jsonl"
DAG_ID = "batch_generation"
GENERATE = "generate_local"
POLL_S = 0.25
RUN_TIMEOUT_S = 600
CHILD_TIMEOUT_S = 900
MODES = ("direct", "embedded", "stack")


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class TaskRecord:
    """One task instance as Airflow recorded it; times are POSIX seconds."""

    task_id: str
    map_index: int
    state: str
    start: float | None
    end: float | None
    queued: float | None = None  # when the scheduler handed it to the executor (the stack records it)

    @property
    def key(self) -> str:
        return self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"

    @property
    def duration(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


def to_epoch(value: str | dt.datetime | None) -> float | None:
    """An ISO-8601 string (``Z`` or offset) or an aware datetime as POSIX seconds; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def union_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if cur_end is None or start > cur_end:
            if cur_end is not None and cur_start is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None and cur_start is not None:
        total += cur_end - cur_start
    return total


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (an interval ending as another starts: not open)."""
    events = sorted([(s, 1) for s, e in intervals if e > s] + [(e, -1) for s, e in intervals if e > s])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def ran(records: Sequence[TaskRecord]) -> list[TaskRecord]:
    """The task instances that actually ran (skipped ones have no work), ordered by start."""
    return sorted((r for r in records if r.state == "success" and r.start is not None and r.end is not None),
                  key=lambda r: (r.start or 0.0, r.key))


def gaps(records: Sequence[TaskRecord], upstream: Mapping[str, Sequence[str]], trigger: float) -> dict[str, float]:
    """Per task instance: start − the moment it could have started (see the module docstring)."""
    ends = [(r.end, r) for r in records if r.end is not None]
    out = {}
    for r in ran(records):
        assert r.start is not None
        ready = trigger
        ups = set(upstream.get(r.task_id, ()))
        for end, other in ends:
            if other is r:
                continue
            if other.task_id in ups or end <= r.start:
                ready = max(ready, end)
        out[r.key] = r.start - ready if ready <= r.start else 0.0
    return out


def overhead_figures(records: Sequence[TaskRecord], upstream: Mapping[str, Sequence[str]],
                     compute: Mapping[str, float], trigger: float, done: float) -> dict[str, Any]:
    """Per-task and total overhead figures of one run (seconds, rounded to ms)."""
    done_tasks = ran(records)
    gap = gaps(records, upstream, trigger)
    tasks: dict[str, dict[str, float | None]] = {}
    busy: list[tuple[float, float]] = []
    for r in done_tasks:
        assert r.start is not None and r.end is not None
        c = compute.get(r.key)
        queued_to_start = r.start - r.queued if r.queued is not None and r.queued <= r.start else None
        row: dict[str, float | None] = {"gap_s": gap[r.key], "queued_to_start_s": queued_to_start,
                                        "duration_s": r.duration, "compute_s": c,
                                        "overhead_s": gap[r.key] + r.duration - (c or 0.0)}
        tasks[r.key] = {k: (round(v, 3) if v is not None else None) for k, v in row.items()}
        if c:
            busy.append((max(r.start, r.end - c), r.end))
    wall = done - trigger
    last_end = max((r.end for r in done_tasks if r.end is not None), default=trigger)
    compute_busy = union_length(busy)
    totals = {
        "wall_s": wall,
        "compute_sum_s": sum(c for k, c in compute.items() if k in tasks),
        "compute_busy_s": compute_busy,
        "overhead_s": wall - compute_busy,
        "overhead_fraction": (wall - compute_busy) / wall if wall > 0 else 0.0,
        "gaps_s": sum(gap.values()) + max(0.0, done - last_end),
        "tail_s": max(0.0, done - last_end),
        "in_task_overhead_s": sum(r.duration - compute.get(r.key, 0.0) for r in done_tasks),
        "task_instances": float(len(done_tasks)),
        "max_concurrent_shards": float(max_overlap([(r.start or 0.0, r.end or 0.0) for r in done_tasks
                                                    if r.task_id == GENERATE])),
    }
    totals["overhead_per_task_s"] = totals["overhead_s"] / len(done_tasks) if done_tasks else 0.0
    return {"tasks": tasks, "totals": {k: round(v, 4 if k == "overhead_fraction" else 3) for k, v in totals.items()}}


def compute_per_task(direct_tasks: Mapping[str, float], direct_workers: Mapping[str, Mapping[str, float]],
                     run_workers: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """In-task compute for one orchestrated run: the direct leg's task times, with each generate shard
    replaced by its own worker record (``wall_s``) plus the direct leg's launch cost for that shard."""
    out = dict(direct_tasks)
    for key, timings in run_workers.items():
        launch = max(0.0, direct_tasks.get(key, 0.0) - direct_workers.get(key, {}).get("wall_s", 0.0))
        out[key] = float(timings["wall_s"]) + launch
    return out


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians (with min/max) over repetitions of one mode's ``overhead_figures`` results."""
    totals = {k: spread([r["totals"][k] for r in runs]) for k in runs[0]["totals"]}
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r["tasks"] if k not in keys]
    tasks: dict[str, dict[str, float | None]] = {}
    for key in keys:
        rows = [r["tasks"][key] for r in runs if key in r["tasks"]]
        tasks[key] = {f: (round(statistics.median(vals), 3) if (vals := [x[f] for x in rows if x[f] is not None])
                          else None) for f in rows[0]}
    return {"tasks": tasks, "totals": totals}


def table(summary: Mapping[str, Any]) -> str:
    """A human table: per task, duration / compute / overhead for each orchestrated mode; then totals."""
    modes = [m for m in ("embedded", "stack") if m in summary]
    keys: list[str] = []
    for m in modes:
        keys += [k for k in summary[m]["tasks"] if k not in keys]
    head = f"{'task':<20}" + "".join(f" | {m + ' gap/dur/compute/overhead (s)':>44}" for m in modes)
    lines = [head, "-" * len(head)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for key in keys:
        cells = []
        for m in modes:
            row = summary[m]["tasks"].get(key)
            cells.append(" ".join(f"{fmt(row[f]):>10}" for f in ("gap_s", "duration_s", "compute_s", "overhead_s"))
                         if row else f"{'(not run)':>43}")
        lines.append(f"{key:<20}" + "".join(f" | {c:>44}" for c in cells))
    lines.append("-" * len(head))
    for total in ("wall_s", "compute_sum_s", "compute_busy_s", "overhead_s", "overhead_fraction", "gaps_s",
                  "overhead_per_task_s"):
        cells = [f"{summary[m]['totals'][total]['median']:.3f} [{summary[m]['totals'][total]['min']:.3f}, "
                 f"{summary[m]['totals'][total]['max']:.3f}]" for m in modes]
        lines.append(f"{total:<20}" + "".join(f" | {c:>44}" for c in cells))
    if "direct" in summary:
        lines.append(f"direct (no orchestrator) wall: {summary['direct']['wall_s']['median']:.3f} s median")
    return "\n".join(lines)


# --------------------------------------------------------------------------- run inputs


def make_spec(work: Path, rows: int, shards: int, run_id: str) -> dict[str, Any]:
    """The catalog example's spec on the first ``rows`` rows, ``shards`` shards, outputs under ``work``."""
    from devstack.airflow_stack import REGISTRY
    from genbatch.run.spec import load_spec

    data = load_spec(EXAMPLE_SPEC).to_json_dict()
    items = work / "data" / "items.jsonl"
    if not items.exists():
        items.parent.mkdir(parents=True, exist_ok=True)
        lines = EXAMPLE_ITEMS.read_text().splitlines()
        if rows > len(lines):
            raise SystemExit(f"--rows {rows}: the catalog example has {len(lines)} rows")
        items.write_text("".join(line + "\n" for line in lines[:rows]))
    data["input"]["uri"] = str(items)
    data["output"]["uri"] = str(work / "runs")
    data["model"]["registry"] = str(REGISTRY)
    data["sharding"]["num_shards"] = shards
    data["run_id"] = run_id
    return data


def allowed_prefixes(work: Path) -> str:
    from devstack.airflow_stack import REGISTRY

    return ",".join(str(p) for p in (work, REPO / "examples", REGISTRY))


def worker_timings(run_dir: str, shards: int) -> dict[str, dict[str, float]]:
    """Each shard manifest's ``timings`` (model_load_s, compute_s, wall_s), keyed generate_local[k]."""
    from genbatch.io import storage
    from genbatch.run.layout import RunLayout

    layout = RunLayout(run_dir)
    return {f"{GENERATE}[{k}]": dict(storage.read_json(layout.shard_manifest(k))["timings"]) for k in range(shards)}


# --------------------------------------------------------------------------- child legs (own processes)


def _direct(spec: dict[str, Any], out: Path) -> None:
    """The direct leg: the core's stage sequence in this process (the worker as a subprocess per shard), each
    stage timed; the imports of the stage functions fall in the first stage that needs them."""
    times: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        times[key] = time.perf_counter() - t0

    trigger = time.perf_counter()
    from genbatch.run.layout import RunLayout
    from genbatch.run.state import load_run_state
    from genbatch.stages.sequence import Handoffs, run_sequence

    run_dir = RunLayout.for_run(spec["output"]["uri"], spec["run_id"]).root

    @contextlib.contextmanager
    def task_timer(key: str) -> Iterator[None]:
        if key.startswith("generate[") and "choose_backend" not in times:
            with timed("choose_backend"):  # the branch task between cost_check and the shards reads the spec
                load_run_state(run_dir).spec.execution.backend  # noqa: B018
        with timed(key.replace("generate[", f"{GENERATE}[") if key.startswith("generate[") else key):
            yield

    # Imported where first used, so each import is timed inside the stage that pays for it.
    def resolve(spec: Any) -> Any:
        from models.registry import resolve_for_spec

        return resolve_for_spec(spec)

    def preprocess(state: Any) -> list[int]:
        from beam_jobs.preprocess import run
        from genbatch.stages.preprocess import pipeline_argv, shard_numbers

        return shard_numbers(run(pipeline_argv(state.layout.root)))

    def generate(state: Any, shard: int) -> dict[str, Any]:
        from genbatch.stages.generate import run_worker_process

        return run_worker_process(state.layout.root, shard)

    handoffs = Handoffs(preprocess=preprocess, generate=generate)
    done = run_sequence(spec, spec["run_id"], resolve_model=resolve, handoffs=handoffs, timer=task_timer)
    shards = done.shards
    with timed("canary_verdict"):
        load_run_state(run_dir).canary_model  # noqa: B018 - no canary arm in this spec: the verdict is a no-op
    wall = time.perf_counter() - trigger
    out.write_text(json.dumps({"tasks": times, "wall_s": wall, "workers": worker_timings(run_dir, len(shards))}))


def _embedded(spec: dict[str, Any], home: Path, out: Path) -> None:
    """The embedded leg: ``dag.test()`` on a SQLite home, as ``genbatch run`` does."""
    from genbatch.cli import embedded

    embedded.configure(home)
    embedded.ensure_db(home)
    from models.zoo.seed import ensure_zoo_registered

    ensure_zoo_registered(spec["model"]["registry"])
    from airflow.dag_processing.dagbag import DagBag

    trigger = time.time()
    bag = DagBag(dag_folder=str(embedded.DAGS_FOLDER / f"{DAG_ID}.py"))
    dag = bag.dags[DAG_ID]
    dr = dag.test(run_conf=spec)
    done = time.time()
    records = [asdict(TaskRecord(ti.task_id, int(ti.map_index), str(getattr(ti.state, "value", ti.state)),
                                 to_epoch(ti.start_date), to_epoch(ti.end_date), to_epoch(ti.queued_dttm)))
               for ti in dr.get_task_instances()]
    upstream = {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}
    from genbatch.run.layout import RunLayout

    run_dir = RunLayout.for_run(spec["output"]["uri"], spec["run_id"]).root
    state = str(getattr(dr.state, "value", dr.state))
    out.write_text(json.dumps({"state": state, "trigger": trigger, "done": done, "records": records,
                               "upstream": upstream,
                               "workers": worker_timings(run_dir, spec["sharding"]["num_shards"])
                               if state == "success" else {}}))


def _child(leg: str, spec: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    spec_file, out = work / f"{tag}.spec.json", work / f"{tag}.result.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "GENBATCH_ALLOWED_PREFIXES": allowed_prefixes(work)}
    env = {k: v for k, v in env.items() if not (k.startswith("AIRFLOW__") or k == "AIRFLOW_HOME")}
    cmd = [sys.executable, "-m", "bench.overhead", f"_{leg}", "--spec-json", str(spec_file), "--out", str(out),
           "--home", str(work / "embedded-home")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          check=False)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{leg} leg failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------- the stack leg


class StackClient:
    """The REST API as the admin user, the way tests/integration/test_airflow_stack.py drives it."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=f"{url}/api/v2", timeout=60,
                                   headers={"Authorization": f"Bearer {token}"})

    def get(self, path: str) -> Any:
        resp = self.client.get(path)
        resp.raise_for_status()
        return resp.json()

    def unpause(self) -> None:
        self.client.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()

    def upstream(self) -> dict[str, list[str]]:
        ups: dict[str, list[str]] = {}
        for task in self.get(f"/dags/{DAG_ID}/tasks")["tasks"]:
            ups.setdefault(task["task_id"], [])
            for down in task.get("downstream_task_ids") or []:
                ups.setdefault(down, []).append(task["task_id"])
        return ups

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        trigger = time.time()
        resp = self.client.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": spec})
        resp.raise_for_status()
        run_id = resp.json()["dag_run_id"]
        deadline = time.monotonic() + RUN_TIMEOUT_S
        run: dict[str, Any] = {"state": "not polled"}
        while time.monotonic() < deadline:
            run = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")
            if run["state"] in {"success", "failed"}:
                break
            time.sleep(POLL_S)
        done = time.time()
        tis = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        records = [asdict(TaskRecord(t["task_id"], int(t["map_index"]), str(t["state"]), to_epoch(t["start_date"]),
                                     to_epoch(t["end_date"]), to_epoch(t.get("queued_when")))) for t in tis]
        return {"state": run["state"], "trigger": trigger, "done": done, "records": records,
                "run_record_s": (to_epoch(run.get("end_date")) or done) - (to_epoch(run.get("queued_at")) or trigger)}


# --------------------------------------------------------------------------- main


def _figures(result: Mapping[str, Any], upstream: Mapping[str, Sequence[str]], direct: Mapping[str, Any]
             ) -> dict[str, Any]:
    records = [TaskRecord(**r) for r in result["records"]]
    compute = compute_per_task(direct["tasks"], direct["workers"], result["workers"])
    figures = overhead_figures(records, upstream, compute, result["trigger"], result["done"])
    figures["workers"] = result["workers"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("leg", nargs="?", default="bench", choices=["bench", "_direct", "_embedded"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=40, help="first N rows of the catalog example (default 40)")
    parser.add_argument("--shards", type=int, default=2, help="number of shards (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of every mode (default 1)")
    parser.add_argument("--modes", default=",".join(MODES), help="subset of direct,embedded,stack (direct always runs)")
    parser.add_argument("--spec-json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.leg == "_direct":
        _direct(json.loads(args.spec_json.read_text()), args.out)
        return 0
    if args.leg == "_embedded":
        _embedded(json.loads(args.spec_json.read_text()), args.home, args.out)
        return 0
    modes = {m.strip() for m in args.modes.split(",") if m.strip()} | {"direct"}
    if modes - set(MODES) or args.rows < 1 or args.shards < 1 or args.repeat < 1:
        parser.error("--modes takes direct,embedded,stack; --rows, --shards and --repeat must be ≥ 1")

    def say(msg: str) -> None:
        print(f"[overhead] {msg}", file=sys.stderr, flush=True)

    load_before = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="genbatch-overhead-"))
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    extra: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack_ctx:
            client: StackClient | None = None
            if "stack" in modes:
                from devstack.airflow_stack import api_token, running_stack

                t0 = time.monotonic()
                say("starting the local Airflow stack (PostgreSQL + 4 components; a minute or two)")
                stack = stack_ctx.enter_context(running_stack(
                    work / "airflow", extra_env={"GENBATCH_ALLOWED_PREFIXES": allowed_prefixes(work)}))
                extra["stack_start_s"] = round(time.monotonic() - t0, 1)
                client = StackClient(stack.url, api_token(stack.url, "admin", stack.users["admin"]))
                client.unpause()
                extra["stack_upstream"] = client.upstream()
                say(f"stack up in {extra['stack_start_s']} s at {stack.url}")
            for rep in range(args.repeat):
                order = [m for m in MODES if m in modes]
                order = [order[0], *(order[1:] if rep % 2 == 0 else order[:0:-1])]  # direct first: the others use it
                direct: dict[str, Any] = {}
                for mode in order:
                    spec = make_spec(work, args.rows, args.shards, f"overhead-{mode}-{rep}")
                    say(f"repetition {rep + 1}/{args.repeat}: {mode}")
                    if mode == "direct":
                        direct = _child("direct", spec, work, f"direct-{rep}")
                        runs["direct"].append({"wall_s": direct["wall_s"], "tasks": direct["tasks"],
                                               "workers": direct["workers"]})
                        say(f"  direct wall {direct['wall_s']:.2f} s")
                        continue
                    if mode == "embedded":
                        result = _child("embedded", spec, work, f"embedded-{rep}")
                        upstream = result["upstream"]
                    else:
                        assert client is not None
                        result = client.run(spec)
                        upstream = extra["stack_upstream"]
                        if result["state"] == "success":
                            from genbatch.run.layout import RunLayout

                            run_dir = RunLayout.for_run(spec["output"]["uri"], spec["run_id"]).root
                            result["workers"] = worker_timings(run_dir, args.shards)
                    if result["state"] != "success":
                        raise RuntimeError(f"{mode} run {spec['run_id']} ended {result['state']}: "
                                           f"{[(r['task_id'], r['map_index'], r['state']) for r in result['records']]}")
                    figures = _figures(result, upstream, direct)
                    if mode == "stack":
                        figures["totals"]["run_record_s"] = round(result["run_record_s"], 3)
                    runs[mode].append(figures)
                    say(f"  {mode} wall {figures['totals']['wall_s']:.2f} s, overhead "
                        f"{figures['totals']['overhead_s']:.2f} s ({figures['totals']['overhead_fraction']:.0%})")
                shutil.rmtree(work / "runs", ignore_errors=True)
            say("stopping what was started")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary: dict[str, Any] = {m: summarise(runs[m]) for m in ("embedded", "stack") if m in modes}
    summary["direct"] = {"wall_s": spread([r["wall_s"] for r in runs["direct"]]),
                         "tasks": {k: round(statistics.median(r["tasks"][k] for r in runs["direct"]), 3)
                                   for k in runs["direct"][0]["tasks"]},
                         "workers": runs["direct"][-1]["workers"]}
    for m in ("embedded", "stack"):
        if m in modes:
            summary[m]["workers"] = runs[m][-1]["workers"]
    line = {"benchmark": "orchestration_overhead", "rows": args.rows, "shards": args.shards, "repeat": args.repeat,
            "example": "catalog", "cpus": os.cpu_count(), "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2), **{k: v for k, v in extra.items() if k != "stack_upstream"},
            **summary}
    print(json.dumps(line), flush=True)
    print(table(summary), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
