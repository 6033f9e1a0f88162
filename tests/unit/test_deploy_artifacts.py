"""Deployment artefacts checked without a cluster or a container engine: schema and lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
MANIFESTS = sorted((REPO / "docker" / "k8s").glob("*.yaml"))
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def test_there_are_manifests_and_dockerfiles() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "resourcequota.yaml", "priorityclass.yaml",
            "networkpolicy.yaml"} <= names
    assert {p.name for p in DOCKERFILES} == {"worker.Dockerfile", "airflow.Dockerfile"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_airflow_may_manage_pods_only_in_the_genbatch_namespace() -> None:
    role, binding = yaml.safe_load_all((REPO / "docker/k8s/rbac.yaml").read_text())
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "genbatch"  # a Role, not a ClusterRole
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"pods", "pods/log", "pods/exec", "events"}
    assert binding["roleRef"]["kind"] == "Role"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(path: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--no-color", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("path", "extras"), [("worker.Dockerfile", "worker"), ("airflow.Dockerfile", "airflow,beam")])
def test_images_install_exactly_the_lock_with_the_command_ci_runs(path: str, extras: str) -> None:
    text = (REPO / "docker" / path).read_text()
    assert f"RUN docker/pip-install.sh {extras}\n" in text
    assert "constraints.txt" in text
    assert "docker/pip-install.sh worker,beam,airflow,dev --editable" in (REPO / "Makefile").read_text()
    script = (REPO / "docker/pip-install.sh").read_text()
    assert '-c "$here/constraints.txt"' in script


def test_worker_image_never_installs_airflow_and_airflow_image_never_torch() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    extras = cfg["options.extras_require"]
    assert "airflow" not in extras["worker"] and "torch" not in extras["airflow"] and "torch" not in extras["beam"]
