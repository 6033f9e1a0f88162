"""Model promotion end to end: the model_promotion DAG (dag.test) promotes a better candidate,
rejects a heavily pruned one with evidence, and `genbatch model rollback` restores production."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models import registry as reg
from models.zoo.seed import ZOO_DIR, ensure_zoo_registered

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# The DAG runs in the CLI process as in the Airflow image: no torch, transformers, diffusers or Beam there
# (genbatch.cli.light_process); the evaluations and builds run as worker commands in their own processes.
LIGHT_AIRFLOW_ENV = {**os.environ, "GENBATCH_FORBID_HEAVY_IMPORTS": "1"}


def _genbatch(workdir: Path, *args: str) -> tuple[int, Any, str]:
    proc = subprocess.run([sys.executable, "-m", "genbatch", "model", "--registry", ".genbatch/registry", *args],
                          cwd=workdir, capture_output=True, text=True, timeout=600, env=LIGHT_AIRFLOW_ENV, check=False)
    out = proc.stdout
    return proc.returncode, json.loads(out[out.index("{"):]) if "{" in out else None, proc.stderr


def _pruned_copy(src: Path, dst: Path, sparsity: float) -> Path:
    """Unstructured magnitude pruning of every Linear weight, saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, use_safetensors=True, local_files_only=True)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                k = int(w.numel() * sparsity)
                threshold = w.abs().flatten().kthvalue(k).values
                w.mul_((w.abs() > threshold).to(w.dtype))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(dst)
    return dst


def test_promote_better_reject_pruned_and_roll_back(tmp_path: Path) -> None:
    registry = str(tmp_path / ".genbatch" / "registry")
    ensure_zoo_registered(registry)
    reg.set_alias(registry, "catalog-copy", "production", 1, reason="test: v1 in production")
    reg.set_alias(registry, "catalog-copy", "candidate", 2, reason="test: v2 as candidate")

    code, out, err = _genbatch(tmp_path, "evaluate", "catalog-copy", "candidate")
    assert code == 0, err[-3000:]
    assert out["result"]["verdict"] == "promoted", out
    assert reg.read_aliases(registry, "catalog-copy")["production"] == 2
    promote = [e for e in reg.read_audit(registry, "catalog-copy") if e["event"] == "promote"][-1]
    rows = {r["metric"]: r for r in promote["evidence"]["rows"]}
    assert rows["mentions_attributes"]["candidate"] > rows["mentions_attributes"]["production"]
    assert rows["mentions_attributes"]["ci95"][0] > 0  # v2 is better with 95% confidence

    pruned = reg.register_version(registry, "catalog-copy",
                                  _pruned_copy(ZOO_DIR / "catalog-copy" / "v2", tmp_path / "pruned", 0.95),
                                  lineage={"parent_version": 2, "optimisation": "unstructured magnitude pruning 95%"})
    code, out, err = _genbatch(tmp_path, "evaluate", "catalog-copy", str(pruned.version))
    assert code == 0, err[-3000:]
    assert out["result"]["verdict"] == "rejected" and "mentions_attributes" in out["result"]["failed"]
    assert reg.read_aliases(registry, "catalog-copy")["production"] == 2, "production unchanged"
    reject = [e for e in reg.read_audit(registry, "catalog-copy") if e["event"] == "reject"][-1]
    assert reject["version"] == pruned.version and reject["evidence"]["rows"]

    code, out, err = _genbatch(tmp_path, "rollback", "catalog-copy")
    assert code == 0, err
    assert reg.read_aliases(registry, "catalog-copy")["production"] == 1
