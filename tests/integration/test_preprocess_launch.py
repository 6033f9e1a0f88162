"""The preprocess task launches the real Beam job as a subprocess, with Beam refused in its own process.

A fresh interpreter installs the heavy-import guard (``genbatch.cli.light_process``, as embedded runs
with ``GENBATCH_FORBID_HEAVY_IMPORTS=1`` do), then runs the DAG's ``PreprocessOperator`` on a prepared
run: the provider's run_beam_command starts ``python -m beam_jobs.preprocess`` on the FnApiRunner with two
worker processes (``direct_running_mode=multi_processing``). The shards must equal those of the job run
in-process on one worker, and ``apache_beam`` must never have been imported by the task's process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_jobs.preprocess import run
from models.registry import register_version
from tests.helpers import prepared_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TASK = r"""
import json, sys
from genbatch.cli.light_process import forbid_heavy_imports
refused = forbid_heavy_imports()
from operators.beam import PreprocessOperator
shards = PreprocessOperator(task_id="preprocess", run_dir=sys.argv[1]).execute({})
print(json.dumps({"shards": shards, "refused": refused,
                  "beam_loaded": sorted(m for m in sys.modules if m.startswith("apache_beam"))}))
"""


def _accepted(n: int) -> str:
    rows = [{"index": i, "row": {"id": f"sku-{i % 150:05d}", "prompt": f"colour: red | item: scarf {'soft ' * (i % 9)}"
                                 "\ndescription:"}} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_the_task_runs_the_job_on_worker_processes_without_importing_beam(tmp_path: Path) -> None:
    model = register_version(str(tmp_path / "registry"), "catalog-copy", REPO / "models/zoo/catalog-copy/v1")
    roots = {}
    for name in ("launched", "in-process"):
        state = prepared_run(str(tmp_path / name), num_shards=3, model=model, run_id="same-run",
                             preprocess={"inline_workers": 2})
        Path(state.layout.validation_accepted).parent.mkdir(parents=True)
        Path(state.layout.validation_accepted).write_text(_accepted(400))
        roots[name] = Path(state.layout.root)

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", TASK, str(roots["launched"])], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"shards": [0, 1, 2], "refused": [], "beam_loaded": []}

    run(["--run-dir", str(roots["in-process"])])  # the same job, in this process, one worker
    for rel in ("shards/_plan.json", "rejects/part-preprocess-00000.jsonl",
                *(f"shards/shard-{s:05d}-of-00003.jsonl" for s in range(3))):
        assert (roots["launched"] / rel).read_bytes() == (roots["in-process"] / rel).read_bytes(), rel
