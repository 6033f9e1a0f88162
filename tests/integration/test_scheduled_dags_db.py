"""An invalid scheduled spec must not stop the valid ones: what Airflow's metadata DB records after a parse.

The DAG processor writes the parsed DAGs, then marks every DAG of a file with an import error stale and
``has_import_errors`` (airflow/dag_processing/collection.py); the scheduler starts runs only of DAGs
with neither (DagModel.dags_needing_dagruns). So the factory's import error must come from a file that
holds none of the valid specs' DAGs. Checked here on a real SQLite metadata DB, with the same sync the
DAG processor does (sync_bag_to_db), in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from sqlalchemy import select
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
from airflow.models.dag import DagModel
from airflow.models.errors import ParseImportError
from airflow.utils.session import create_session

DagBundlesManager().sync_bundles_to_db()
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=sys.argv[1], bundle_name="dags-folder")
sync_bag_to_db(bag, "dags-folder", None)
with create_session() as session:
    dags = {dm.dag_id: {"file": dm.relative_fileloc, "has_import_errors": dm.has_import_errors,
                        "is_stale": dm.is_stale} for dm in session.scalars(select(DagModel))}
    errors = {e.filename: e.stacktrace for e in session.scalars(select(ParseImportError))}
print(json.dumps({"dags": dags, "errors": errors}))
"""

SPEC: dict[str, Any] = {"task": "text", "input": {"uri": "in.jsonl"},
                        "model": {"name": "catalog-copy", "alias": "production"}, "output": {"uri": "runs/x"}}


def parse_into_db(specs: dict[str, dict[str, Any]], home: Path) -> dict[str, Any]:
    specs_dir = home / "specs"
    specs_dir.mkdir()
    for name, data in specs.items():
        (specs_dir / name).write_text(json.dumps(data))
    env = {**os.environ, "AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "GENBATCH_SPECS_DIR": str(specs_dir),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}"}
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], check=True, capture_output=True, env=env, cwd=REPO, timeout=180)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags")], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_an_invalid_spec_leaves_the_valid_scheduled_dags_schedulable(tmp_path: Path) -> None:
    specs = {"nightly.yaml": {**SPEC, "schedule": {"cron": "@daily"}},
             "drops.yaml": {**SPEC, "schedule": {"arrival": {"prefix": "/srv/drops/"}},
                            "input": {"uri": "{{ event_uri }}"}},
             "broken.yaml": {**SPEC, "schedule": {"cron": "every day"}}}
    db = parse_into_db(specs, tmp_path)
    [(error_file, stacktrace)] = db["errors"].items()
    assert "broken.yaml: 1 invalid field(s)" in stacktrace and "schedule.cron" in stacktrace
    for dag_id in ("genbatch__nightly", "genbatch__drops", "genbatch__drops__events", "batch_generation"):
        row = db["dags"][dag_id]
        assert (row["has_import_errors"], row["is_stale"]) == (False, False), (dag_id, row)
        assert row["file"] != error_file, dag_id
    assert error_file.endswith("scheduled_specs_errors.py"), error_file
