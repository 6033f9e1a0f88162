"""The gates discriminate on real runs: the zoo's v2 passes the catalog gates, the undertrained v1
fails adherence with a message naming gate, threshold, measured value and example ids, and is
never published (no manifest, no ``_SUCCESS``).

Each run is ``genbatch run`` in a subprocess (the batch_generation DAG under ``dag.test()``), as in
``test_batch_run.py``; the two runs share one working directory, so Airflow's DB migrates once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from genbatch.io import storage
from genbatch.run.layout import RunLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# The gates issue 5 names, on top of the example spec's own thresholds.
CATALOG_GATES = ["empty_rate <= 0.01", "adherence >= 0.9", "pii_hits == 0", "repetition_rate <= 0.02",
                 "truncation_rate <= 0.05"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality-gate")


def _catalog_spec(workdir: Path, version: int) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "examples/catalog/spec.yaml").read_text())
    spec["input"]["uri"] = str(REPO / spec["input"]["uri"])
    spec["model"] = {"name": "catalog-copy", "version": version, "registry": ".genbatch/registry"}
    spec["output"]["uri"] = str(workdir / "runs")
    spec["sharding"]["num_shards"] = 2
    quality = spec.setdefault("quality", {})
    quality["gates"] = list(dict.fromkeys([*quality.get("gates", []), *CATALOG_GATES]))
    return spec


def _run(workdir: Path, spec: dict[str, Any], run_id: str) -> subprocess.CompletedProcess[str]:
    spec_path = workdir / f"{run_id}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [sys.executable, "-m", "genbatch", "run", str(spec_path), "--run-id", run_id],
        cwd=workdir, capture_output=True, text=True, timeout=900, env=dict(os.environ), check=False,
    )


def _cli_summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out = proc.stdout
    return dict(json.loads(out[out.rindex("\n{") + 1:] if "\n{" in out else out[out.index("{"):]))


def test_v2_passes_the_catalog_gates_and_publishes(workdir: Path) -> None:
    proc = _run(workdir, _catalog_spec(workdir, 2), "catalog-v2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    layout = RunLayout(str(workdir / "runs" / "catalog-v2"))
    summary = storage.read_json(layout.quality_summary)
    assert summary["passed"] is True, summary["failure_message"]
    assert {g["gate"] for g in summary["gates"]} >= set(CATALOG_GATES)
    assert summary["metrics"]["adherence"] >= 0.9 and summary["metrics"]["pii_hits"] == 0
    assert storage.exists(layout.success)
    manifest = storage.read_json(layout.manifest)
    assert manifest["quality"]["passed"] is True and manifest["quality"]["override"] is None
    assert all(g["passed"] for g in manifest["quality"]["gates"])
    for uri in (layout.quality_metrics, layout.report_html, layout.path("quality", "data_docs.html"),
                layout.path("validation", "data_docs.html")):
        assert storage.exists(uri), uri


def test_v1_fails_the_adherence_gate_and_is_not_published(workdir: Path) -> None:
    proc = _run(workdir, _catalog_spec(workdir, 1), "catalog-v1")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    cli = _cli_summary(proc)
    assert cli["tasks_not_successful"]["quality_gate"] == "failed"
    assert cli["tasks_not_successful"]["publish"] == "upstream_failed"  # publish never ran
    assert cli["gates"]["adherence"].startswith("FAIL")

    layout = RunLayout(str(workdir / "runs" / "catalog-v1"))
    assert not storage.exists(layout.success) and not storage.exists(layout.manifest)
    summary = storage.read_json(layout.quality_summary)
    assert summary["passed"] is False and summary["publishable"] is False
    adherence = next(g for g in summary["gates"] if g["gate"] == "adherence >= 0.9")
    assert adherence["passed"] is False and adherence["value"] < 0.5  # README: v1 mentions ~26%

    # The task's error names the gate, its threshold, the measured value and up to 5 example ids.
    line = re.search(r"- adherence: measured ([0-9.]+), needs >= 0\.9; examples: ([^\n]+)", output)
    assert line, output[-3000:]
    assert float(line.group(1)) == pytest.approx(adherence["value"], abs=5e-4)
    examples = line.group(2).split(", ")
    assert len(examples) == 5 and examples == adherence["examples"]
    metrics = pd.read_parquet(layout.quality_metrics).set_index("id")
    assert not metrics.loc[examples, "adherent"].any()  # every example really missed an attribute
    assert summary["failure_message"] in output
