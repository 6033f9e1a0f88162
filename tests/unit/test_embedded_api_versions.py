"""The embedded mode's in-process Execution API serves the Task SDK's version exactly as the full app does, built
with fewer versions (genbatch.cli.embedded.serve_fewer_execution_api_versions). In a fresh interpreter: the
change swaps a module-level bundle of Airflow's for the rest of the process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from pathlib import Path
from genbatch.cli import embedded
embedded.configure(embedded.STATE_DIR / "airflow")
from airflow.api_fastapi.execution_api import versions
from airflow.api_fastapi.execution_api.app import create_task_execution_api_app
from airflow.sdk.api.datamodels._generated import API_VERSION
from airflow.sdk.execution_time.supervisor import in_process_api_server
from fastapi.openapi.utils import get_openapi

def describe(app):
    routers = {str(k): r for k, r in app.router.versioned_routers.items()}
    return get_openapi(title="execution", version=API_VERSION, routes=routers[API_VERSION].routes), sorted(routers)

full = create_task_execution_api_app()
full._cadwyn_initialize()
before, all_versions = describe(full)
served = embedded.serve_fewer_execution_api_versions(Path(sys.argv[1]))
after, kept = describe(in_process_api_server().app)
again = embedded.serve_fewer_execution_api_versions(Path(sys.argv[1]))
print(json.dumps({"served": served, "again": again, "same": before == after, "paths": len(before["paths"]),
                  "all": all_versions, "kept": kept, "sdk": API_VERSION, "tried": versions.bundle.genbatch_tried}))
"""


def _probe(tmp_path: Path, memo: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(memo)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return got


def test_the_sdks_version_is_served_unchanged_by_an_app_with_fewer_versions(tmp_path: Path) -> None:
    memo = tmp_path / "memo.json"
    got = _probe(tmp_path, memo)
    assert got["served"] < len(got["all"]), got  # the cut happened: fewer versions are built
    assert got["kept"] == sorted(got["all"])[-got["served"]:] and got["sdk"] in got["kept"]  # the newest ones
    assert got["same"] and got["paths"] > 10, "the SDK's version: the same routes, parameters and schemas"
    assert got["again"] == got["served"]  # idempotent
    # the count that built is remembered: the next process tries it first, and builds the same app
    assert got["tried"][-1] == got["served"] and json.loads(memo.read_text()) != {}
    second = _probe(tmp_path, memo)
    assert second["tried"] == [got["served"]] and second["served"] == got["served"] and second["same"]
    memo.write_text("{torn")  # a torn memo: every count is tried again, as without one
    assert _probe(tmp_path, memo)["tried"] == got["tried"]
