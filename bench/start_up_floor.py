"""What a run's fixed cost cannot go below: the start-up of the libraries an embedded run must start.

``python -m bench.start_up_floor [--repeat 5]``

An embedded ``genbatch run`` is three kinds of process, and each must start libraries before it does any
work of genbatch's: the run process (Airflow, the in-process Execution API that ``dag.test`` runs each
task against, the Kubernetes provider the DAG's k8s branch is built from, Great Expectations for
``validate_input``, matplotlib for the report's charts), the Beam job (``apache_beam`` and its in-memory
runner) and the worker (torch and safetensors). This bench starts each of them bare: a fresh interpreter
pinned to one core, its collector set as ``genbatch.cli.process.run_as_process`` sets it, importing
exactly those libraries in the run's order (the Execution API app built as ``genbatch.cli.embedded``
builds it, in an embedded home of its own) and nothing of genbatch's work. One unmeasured warm-up, then
``--repeat`` interleaved repetitions.

Reports per process the median wall time from start to exit [min, max] and the median seconds of each
step inside it; ``floor_s``: the three medians' sum, the least a run's fixed cost can be on one core while
it starts these libraries; and how much of issue 20's 8-s target that leaves for everything else (Airflow's
per-run work in ``dag.test``, the tasks' own work, the model load). One JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.e2e_vs_script import REPO, _commit, _env, timed

FIXED_COST_TARGET_S = 8.0
"""Issue 20's target for an embedded run's fixed cost."""

# Each process's steps, in the order the run meets them: (step name, the statement that starts it).
PROCESSES: dict[str, list[tuple[str, str]]] = {
    "run": [
        ("airflow", "import airflow.sdk.definitions.dag, airflow.dag_processing.dagbag, "
                    "airflow.sdk.execution_time.supervisor"),
        ("execution_api", "embedded.serve_fewer_execution_api_versions(home / embedded.VERSIONS_MEMO)"),
        ("kubernetes_provider", "import airflow.providers.cncf.kubernetes.operators.pod"),
        ("great_expectations", "import great_expectations"),
        ("matplotlib", "import matplotlib.figure, matplotlib.backends.backend_agg"),
        ("dag_test_same_shape", "same_shape_dag_test(home)"),
    ],
    "beam": [("apache_beam", "import apache_beam, apache_beam.runners.portability.fn_api_runner")],
    "worker": [("torch", "import torch, safetensors.torch")],
}

# The measured process: the collector as run_as_process sets it, the steps timed, the heap frozen at the end.
PROLOGUE = """
import gc, json, sys, time
from pathlib import Path
from genbatch.cli.process import tune_collector
tune_collector()
steps = {}
"""
SETUP_RUN = """
import os
from genbatch.cli import embedded
home = Path(sys.argv[1])
embedded.configure(home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")  # the same-shape DAG only
embedded.ensure_db(home)  # migrated at the warm-up: a user's second run

def same_shape_dag_test(home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(home / "dags" / "same_shape.py"))
    assert not bag.import_errors, bag.import_errors
    gc.freeze()  # as genbatch.cli.embedded.run_dag does (start_up_done) right before dag.test
    run = bag.dags["same_shape"].test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success" and states.pop("generate_kubernetes") == "skipped", states
    assert set(states.values()) == {"success"}, states
"""

# batch_generation's shape: its ten task ids, its edges (every task reads prepare_run's result), its branch
# (generate_kubernetes skipped), its two tasks mapped over preprocess's one shard, its trigger rules; each task
# doing nothing. tests/unit/test_bench_start_up_floor.py checks the shape against the real DAG.
SAME_SHAPE_DAG = """
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task


@task
def step(run: Any = None, prior: Any = None) -> dict:
    return {"done": True}


@task
def shards(run: Any, prior: Any) -> list:
    return [{"shard": 0}]


@task
def shard(run: Any, item: Any) -> dict:
    return {"shard": item["shard"]}


@task.branch
def choose(run: Any, prior: Any) -> str:
    return "generate_local"


with DAG("same_shape", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    run = step.override(task_id="prepare_run")()
    planned = shards.override(task_id="preprocess")(run, step.override(task_id="validate_input")(run))
    branch = choose.override(task_id="choose_backend")(run, step.override(task_id="cost_check")(run, planned))
    generated = [shard.override(task_id=t).partial(run=run).expand(item=planned)
                 for t in ("generate_local", "generate_kubernetes")]
    branch >> generated
    gate = step.override(task_id="quality_gate", trigger_rule="none_failed_min_one_success")(run)
    generated >> gate
    step.override(task_id="canary_verdict")(run, step.override(task_id="publish")(run, gate))
"""
STEP = """
t = time.perf_counter()
{statement}
steps[{name!r}] = time.perf_counter() - t
"""
EPILOGUE = """
Path(sys.argv[2]).write_text(json.dumps(steps))
gc.freeze()
"""


def program(process: str) -> str:
    """The code a measured ``process`` runs (``python PROGRAM HOME REPORT``): its steps, each timed."""
    body = "".join(STEP.format(name=name, statement=statement) for name, statement in PROCESSES[process])
    return PROLOGUE + (SETUP_RUN if process == "run" else "") + body + EPILOGUE


def new_home(parent: Path) -> Path:
    """An embedded home under ``parent`` with the same-shape DAG in its dags folder and each process's program
    in a folder of its own (a program's folder leads its ``sys.path``: nothing there may shadow a package)."""
    home = parent / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "same_shape.py").write_text(SAME_SHAPE_DAG)
    (home / "programs").mkdir()
    for process in PROCESSES:
        (home / "programs" / f"floor_{process}.py").write_text(program(process))
    return home


def one(process: str, home: Path) -> dict[str, Any]:
    """One pinned, fresh ``process`` in ``home`` (``new_home``): its wall time from start to exit and its steps'
    seconds."""
    report = home / "programs" / f"floor_{process}.json"
    wall, _cpu = timed([sys.executable, str(home / "programs" / f"floor_{process}.py"), str(home), str(report)],
                       home.parent, _env(home.parent))
    return {"wall_s": wall, "steps": json.loads(report.read_text())}


def prepare_home(parent: Path) -> Path:
    """``new_home``, warmed up by one unmeasured run of each process: the OS file cache, the metadata DB and the
    Execution API's memo (a user's second run)."""
    home = new_home(parent)
    for process in PROCESSES:
        one(process, home)
    return home


def floor_once(home: Path) -> float:
    """One floor: the three processes one after another, as a run starts them; the sum of their wall times."""
    return sum(one(process, home)["wall_s"] for process in PROCESSES)


def measure(repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-start-up-floor-") as tmp:
        home = prepare_home(Path(tmp))
        order = list(PROCESSES)
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in order}
        for rep in range(repeat):
            for process in order[rep % len(order):] + order[: rep % len(order)]:
                results[process].append(one(process, home))
                print(f"start_up_floor: {process} rep {rep}: {results[process][-1]['wall_s']:.2f} s", file=sys.stderr)
    per_process: dict[str, Any] = {}
    for process, runs in results.items():
        walls = [r["wall_s"] for r in runs]
        per_process[process] = {
            "wall_s": round(statistics.median(walls), 2), "min_s": round(min(walls), 2), "max_s": round(max(walls), 2),
            "steps_s": {name: round(statistics.median(r["steps"][name] for r in runs), 2)
                        for name, _ in PROCESSES[process]},
        }
    floor = sum(p["wall_s"] for p in per_process.values())
    return {"bench": "start_up_floor", "commit": _commit(REPO), "repeat": repeat, "processes": per_process,
            "floor_s": round(floor, 2), "fixed_cost_target_s": FIXED_COST_TARGET_S,
            "left_for_everything_else_s": round(FIXED_COST_TARGET_S - floor, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.start_up_floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
