"""bench/start_up_floor.py: its processes start what they say, and its DAG has batch_generation's shape.

The floor is only a floor if its ``dag.test`` runs a DAG shaped like the real one (the same tasks, edges,
mapped tasks, trigger rules and branch): the shape is compared with ``dags/batch_generation.py`` in a fresh
interpreter (Airflow reads its configuration at import).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.start_up_floor import PROCESSES, SAME_SHAPE_DAG, new_home, one

REPO = Path(__file__).resolve().parents[2]

SHAPE_PROBE = """
import json, sys
from pathlib import Path
from genbatch.cli import embedded
embedded.configure(Path(sys.argv[1]))
from airflow.dag_processing.dagbag import DagBag

def shape(path, dag_id):
    bag = DagBag(dag_folder=path)
    assert not bag.import_errors, bag.import_errors
    return {t.task_id: {"upstream": sorted(t.upstream_task_ids), "trigger_rule": str(t.trigger_rule),
                        "mapped": type(t).__name__.endswith("MappedOperator"),
                        "branch": "Branch" in "".join(c.__name__ for c in type(t).__mro__)}
            for t in bag.dags[dag_id].tasks}

print("SHAPES " + json.dumps({
    "real": shape(str(embedded.DAGS_FOLDER / "batch_generation.py"), "batch_generation"),
    "bench": shape(sys.argv[2], "same_shape"),
}))
"""


def test_the_benchs_dag_has_batch_generations_shape(tmp_path: Path) -> None:
    dag_file = tmp_path / "same_shape.py"
    dag_file.write_text(SAME_SHAPE_DAG)
    proc = subprocess.run([sys.executable, "-c", SHAPE_PROBE, str(tmp_path / "airflow"), str(dag_file)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SHAPES "))
    shapes = json.loads(line.removeprefix("SHAPES "))
    assert len(shapes["real"]) == 10
    assert shapes["bench"] == shapes["real"]


def test_the_beam_and_worker_processes_start_their_libraries(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    for process in ("beam", "worker"):
        got = one(process, home)
        assert set(got["steps"]) == {name for name, _ in PROCESSES[process]}
        assert got["wall_s"] > sum(got["steps"].values()) > 0


@pytest.mark.integration
def test_the_run_process_builds_the_execution_api_and_runs_the_same_shape_dag(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    got = one("run", home)  # the program asserts the run succeeded with generate_kubernetes skipped
    assert list(got["steps"]) == [name for name, _ in PROCESSES["run"]]
    assert got["wall_s"] > sum(got["steps"].values()) > 0
    assert (home / "execution-api-versions.json").exists()  # the app was built as genbatch.cli.embedded builds it
