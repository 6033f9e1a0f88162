"""Canary in a real batch run: the hashed share goes to the candidate, both arms are reported,
and the verdict is acted on (auto_promote): a better candidate is promoted, a worse one rolled back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from genbatch.run.items import canary_arm
from models import registry as reg
from models.zoo.seed import ensure_zoo_registered

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
N_ROWS = 200


def _run(workdir: Path, run_id: str, fraction: float) -> dict[str, Any]:
    spec = {
        "task": "text",
        "input": {"uri": str(REPO / "examples/catalog/items.jsonl"), "max_rows": 500},
        "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"max_new_tokens": 32},
        "sharding": {"num_shards": 2},
        "quality": {"max_duplicate_output_rate": 1.0, "min_nonempty_rate": 0.5},
        "canary": {"enabled": True, "alias": "candidate", "fraction": fraction, "auto_promote": True,
                   "metrics": ["adherent"], "tolerance": 0.02},
        "output": {"uri": str(workdir / "runs")},
    }
    rows = (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:N_ROWS]
    (workdir / "in.jsonl").write_text("\n".join(rows) + "\n")
    spec["input"]["uri"] = str(workdir / "in.jsonl")
    path = workdir / f"{run_id}.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run([sys.executable, "-m", "genbatch", "run", str(path), "--run-id", run_id], cwd=workdir,
                          capture_output=True, text=True, timeout=900, env=os.environ.copy(), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((workdir / "runs" / run_id / "quality" / "canary.json").read_text())


def test_canary_routes_the_hashed_share_and_acts_on_the_verdict(tmp_path: Path) -> None:
    registry = str(tmp_path / ".genbatch" / "registry")
    ensure_zoo_registered(registry)
    ids = [json.loads(x)["id"] for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:N_ROWS]]

    # A worse candidate (v1) against production v2: the canary fails and its alias is rolled back.
    reg.set_alias(registry, "catalog-copy", "candidate", 1, reason="test")
    verdict = _run(tmp_path, "canary-worse", 0.1)
    expected = sum(1 for i in ids if canary_arm(i, 0.1) == "candidate")
    assert verdict["items"]["candidate"] == expected and verdict["items"]["production"] == N_ROWS - expected
    assert verdict["misrouted"] == []
    outputs = [json.loads(x) for p in (tmp_path / "runs/canary-worse/outputs").rglob("part-*.jsonl")
               for x in p.read_text().splitlines()]
    assert {o["id"] for o in outputs if o["arm"] == "candidate"} == {i for i in ids if canary_arm(i, 0.1) == "candidate"}
    assert {o["model_version"] for o in outputs if o["arm"] == "candidate"} == {"catalog-copy@1"}
    assert {o["model_version"] for o in outputs if o["arm"] == "production"} == {"catalog-copy@2"}
    row = verdict["rows"][0]
    assert row["metric"] == "adherent" and row["candidate"] < row["production"] and not verdict["passed"]
    assert "candidate" not in reg.read_aliases(registry, "catalog-copy")
    assert reg.read_aliases(registry, "catalog-copy")["production"] == 2
    report = (tmp_path / "runs/canary-worse/report.html").read_text()
    assert "Canary: catalog-copy@1 vs catalog-copy@2" in report

    # A better candidate (v2) against production v1: the canary passes and v2 is promoted.
    reg.set_alias(registry, "catalog-copy", "production", 1, reason="test")
    reg.set_alias(registry, "catalog-copy", "candidate", 2, reason="test")
    verdict = _run(tmp_path, "canary-better", 0.3)
    assert verdict["passed"] and verdict["rows"][0]["ci95"][0] > 0
    aliases = reg.read_aliases(registry, "catalog-copy")
    assert aliases["production"] == 2 and aliases["previous"] == 1
    assert [e["event"] for e in reg.read_audit(registry, "catalog-copy")][-2:] == ["alias", "promote"]
