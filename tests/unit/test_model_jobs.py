"""The model jobs' worker commands, run for real as the local backend runs them (a subprocess), and the
light-Airflow guard: the old in-process path fails under it, the operators' own imports pass."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from genbatch.io import storage
from genbatch.stages.generate import WorkerFailed
from genbatch.stages.model_jobs import build_variant_command, evaluate_arm_command, run_model_job
from models.model_jobs import evaluation_result_uri, variant_result_uri

REPO = Path(__file__).resolve().parents[2]


def test_an_evaluation_without_a_policy_is_a_permanent_failure(tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    result = evaluation_result_uri(registry, "catalog-copy", "r1")
    with pytest.raises(WorkerFailed, match="has no promotion policy") as failed:
        run_model_job(evaluate_arm_command(registry, "catalog-copy", 2, "r1", result), "evaluation of catalog-copy@2")
    assert failed.value.permanent and failed.value.exit_code == 2
    assert not storage.exists(result)


def test_a_retry_returns_the_written_result_and_registers_nothing(tmp_path: Path) -> None:
    """The first attempt registered v5 and wrote its result, then lost its response: the retry must not build
    (and register) a second variant. The registry here is empty, so any attempt to build would fail."""
    registry = str(tmp_path / "registry")
    uri = variant_result_uri(registry, "catalog-copy", "manual__2026-12-06T10:00:00+00:00", "int8")
    done = {"method": "int8", "quality": {"ratio": 0.99}, "size": {"ratio": 0.4}, "version": 5}
    storage.write_json(uri, done)
    assert run_model_job(build_variant_command(registry, "catalog-copy", 2, "int8", uri), "int8 variant") == done
    assert not (tmp_path / "registry" / "catalog-copy" / "versions").exists()


def test_an_unknown_method_is_a_permanent_failure(tmp_path: Path) -> None:
    uri = variant_result_uri(str(tmp_path), "catalog-copy", "r", "int4")
    with pytest.raises(WorkerFailed, match="unknown optimisation 'int4'") as failed:
        run_model_job(build_variant_command(str(tmp_path), "catalog-copy", 2, "int4", uri), "int4 variant")
    assert failed.value.permanent


# What the Airflow process imports for the model DAGs (DAG files, operators and what their execute imports).
LIGHT_MODULES = ["operators.promotion_operators", "operators.optimization_operators", "operators.genbatch_operators",
                 "operators.worker_job", "operators.pod_spec", "models.promotion", "models.model_jobs",
                 "models.registry", "genbatch.stages.model_jobs", "genbatch.stages.prepare", "genbatch.quality.canary",
                 "genbatch.run.spec"]
GUARD_PROBE = """
import importlib, json, sys
from genbatch.cli.light_process import HeavyImportRefused, forbid_heavy_imports
from models.zoo.seed import ensure_zoo_registered
registry = sys.argv[1]
ensure_zoo_registered(registry)
forbid_heavy_imports()
for name in sys.argv[2:]:
    importlib.import_module(name)
refused = {}
from models.model_jobs import build_variant, evaluate_arm
for name, call in (("build_variant", lambda: build_variant(registry, "catalog-copy", 2, "int8", False)),
                   ("evaluate_arm", lambda: evaluate_arm(registry, "catalog-copy", 2, "guarded"))):
    try:
        call()
    except HeavyImportRefused as exc:
        refused[name] = str(exc)
print(json.dumps(refused))
"""


def test_the_guard_refuses_the_in_process_path_and_passes_the_operators(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", GUARD_PROBE, str(tmp_path / "registry"), *LIGHT_MODULES],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = json.loads(proc.stdout.strip().splitlines()[-1])
    assert re.match(r"(torch|transformers)\S* imported in the Airflow process by \S*models/optimize/",
                    refused["build_variant"]), refused
    assert "run this through the worker command" in refused["build_variant"]
    assert re.match(r"(torch|transformers)\S* imported in the Airflow process by \S*models/", refused["evaluate_arm"]), refused
