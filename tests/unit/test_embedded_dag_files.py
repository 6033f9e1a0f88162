"""The embedded home parses the dags folder without the scheduled specs' files (genbatch.cli.embedded).

``dag.test`` parses the whole dags folder before each run; the scheduled specs' DAGs only run under a
scheduler, so the embedded home's ``[core] might_contain_dag_callable`` leaves their files out. The parse
runs in a fresh interpreter: Airflow reads its configuration at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from pathlib import Path
from genbatch.cli import embedded
embedded.configure(Path(sys.argv[1]))
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.file import might_contain_dag, might_contain_dag_via_default_heuristic
bag = DagBag(dag_folder=str(embedded.DAGS_FOLDER))
elsewhere = Path(sys.argv[1]) / "scheduled_specs.py"
elsewhere.write_text(open(embedded.DAGS_FOLDER / "scheduled_specs.py").read())
print("PROBE " + json.dumps({
    "dags": sorted(bag.dags), "errors": sorted(bag.import_errors),
    "files": sorted(Path(d.fileloc).name for d in bag.dags.values()),
    "msg_queue_imported": "airflow.providers.common.messaging.triggers.msg_queue" in sys.modules,
    "default_heuristic_says_dag": might_contain_dag_via_default_heuristic(
        str(embedded.DAGS_FOLDER / "scheduled_specs.py")),
    "same_name_elsewhere": might_contain_dag(str(elsewhere), safe_mode=True),
}))
"""


def test_the_embedded_home_leaves_the_scheduled_specs_files_out_of_the_dags_folder(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "airflow")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(lines[-1].removeprefix("PROBE "))
    assert got["errors"] == []
    # every DAG the embedded commands run is there; no scheduled spec's DAG, and nothing of theirs imported
    assert {"batch_generation", "model_promotion", "model_optimization", "retention"} <= set(got["dags"])
    assert not [d for d in got["dags"] if d.startswith("scheduled")]
    assert "scheduled_specs.py" not in got["files"] and "scheduled_specs_errors.py" not in got["files"]
    assert got["msg_queue_imported"] is False
    # The control: without the embedded setting Airflow would take the file for a DAG file, and a file of
    # that name outside the dags folder is still judged by Airflow's own heuristic.
    assert got["default_heuristic_says_dag"] is True
    assert got["same_name_elsewhere"] is True
