"""Failure callbacks set on each task after the DAG is built (operators.alerts.on_each_task_failure) fire
for plain and for mapped task instances in a real ``dag.test()`` run: the mapped tasks get them through
their partial kwargs, which is what moving them out of default_args relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DAG_FILE = r"""
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from operators.alerts import on_each_task_failure

FIRED = Path(__file__).with_name("fired.txt")


def record(context):
    ti = context["ti"]
    with FIRED.open("a") as out:
        out.write(f"{ti.task_id}[{ti.map_index}]\n")


with DAG("failure_callbacks_probe", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"retries": 0}) as dag:
    @task
    def shards():
        return [0, 1]

    @task
    def shard(n):
        raise ValueError(f"shard {n} fails on purpose")

    @task
    def plain():
        raise ValueError("fails on purpose")

    @task
    def fine():
        return "ok"

    shard.expand(n=shards())
    plain()
    fine()
on_each_task_failure(dag, record)
"""

PROBE = r"""
import json, os, sys
from pathlib import Path
from genbatch.cli import embedded

home, dag_file = Path(sys.argv[1]), sys.argv[2]
embedded.configure(home)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(dag_file).parent)  # dag.test() runs DAGs of the dags folder
embedded.ensure_db(home)
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=dag_file)
assert not bag.import_errors, bag.import_errors
run = bag.dags["failure_callbacks_probe"].test()
print(json.dumps({"state": str(run.state)}))
"""


def test_per_task_failure_callbacks_fire_for_plain_and_mapped_tasks(tmp_path: Path) -> None:
    (tmp_path / "dags").mkdir()
    dag_file = tmp_path / "dags" / "failure_callbacks_probe.py"
    dag_file.write_text(DAG_FILE)
    fired = dag_file.with_name("fired.txt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "airflow"), str(dag_file)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["state"] == "failed"
    assert sorted(fired.read_text().split()) == ["plain[-1]", "shard[0]", "shard[1]"]
