"""Deployment artefacts checked without a cluster or a container engine: schema and lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33.0"
MANIFESTS = sorted((REPO / "docker" / "k8s").rglob("*.yaml"))  # airflow/: the Airflow release's namespace
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
HELM_VALUES = REPO / "docker" / "helm" / "airflow-values.yaml"
SPECS_CONFIGMAP = REPO / "docker" / "k8s" / "airflow" / "specs-configmap.yaml"
# The official chart's Airflow components, by values key: the dag-processor parses the DAG files, the
# KubernetesExecutor's task pods (workers) parse a task's DAG file before running it, the triggerer runs the
# arrival and queue watchers; the scheduler and api-server get the same folder so no component disagrees.
AIRFLOW_COMPONENTS = ("dagProcessor", "workers", "triggerer", "scheduler", "apiServer")


def test_there_are_manifests_and_dockerfiles() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"namespace.yaml", "serviceaccount.yaml", "rbac.yaml", "resourcequota.yaml", "priorityclass.yaml",
            "networkpolicy.yaml", "specs-configmap.yaml"} <= names
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


def chart_container(values: dict[str, Any], component: str) -> dict[str, list[dict[str, Any]]]:
    """The volumes, mounts and env the official chart gives ``component``'s Airflow container: the global
    ``volumes``, ``volumeMounts`` and ``env`` (every Airflow container: chart/templates/*/…-deployment.yaml,
    files/pod-template-file.kubernetes-helm-yaml), then the component's ``extraVolumes``,
    ``extraVolumeMounts`` and ``env``."""
    own = values.get(component) or {}
    return {"volumes": [*values.get("volumes", []), *own.get("extraVolumes", [])],
            "mounts": [*values.get("volumeMounts", []), *own.get("extraVolumeMounts", [])],
            "env": [*values.get("env", []), *own.get("env", [])]}


@pytest.mark.parametrize("component", AIRFLOW_COMPONENTS)
def test_every_airflow_component_mounts_the_specs_folder_where_genbatch_specs_dir_points(component: str) -> None:
    from genbatch.schedule.spec import SPECS_DIR_ENV

    values = yaml.safe_load(HELM_VALUES.read_text())
    container = chart_container(values, component)
    specs_dirs = [e["value"] for e in container["env"] if e["name"] == SPECS_DIR_ENV]
    assert len(specs_dirs) == 1, f"{component}: {SPECS_DIR_ENV} set {len(specs_dirs)} times"
    mounts = [m for m in container["mounts"] if m["mountPath"] == specs_dirs[0]]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True, component
    volume = next(v for v in container["volumes"] if v["name"] == mounts[0]["name"])
    configmap = yaml.safe_load(SPECS_CONFIGMAP.read_text())
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert not specs_dirs[0].startswith("/opt/airflow/dags")  # never walked as DAG files
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"airflow-{component.lower()}"},
           "spec": {"containers": [{"name": "airflow", "image": "airflow", "env": container["env"],
                                    "volumeMounts": container["mounts"]}], "volumes": container["volumes"]}}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_the_triggerer_and_dag_processor_are_not_disabled() -> None:
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert values["triggerer"]["enabled"] is True
    assert (values.get("dagProcessor") or {}).get("enabled", True) is not False  # the chart's default for Airflow 3


def test_the_specs_configmap_holds_valid_scheduled_specs_in_the_airflow_namespace() -> None:
    from genbatch.schedule.spec import parse_scheduled_spec

    configmap = yaml.safe_load(SPECS_CONFIGMAP.read_text())
    assert configmap["metadata"]["namespace"] == "airflow"  # the release's (helm -n airflow), where pods mount it
    assert configmap["data"]
    for key, text in configmap["data"].items():
        assert key.endswith(".yaml")
        parse_scheduled_spec(yaml.safe_load(text), Path(key))  # raises naming every bad field


def test_a_mounted_configmap_reads_as_the_specs_folder(tmp_path: Path) -> None:
    """The kubelet writes a ConfigMap volume atomically: the files in a timestamped ``..<date>`` folder,
    ``..data`` a link to it, each key a link through ``..data``. The factory sees exactly the keys."""
    from genbatch.schedule.spec import load_specs_folder

    data = yaml.safe_load(SPECS_CONFIGMAP.read_text())["data"]
    mount = tmp_path / "specs"
    version = mount / "..2026_12_06_19_00_00.123456789"
    version.mkdir(parents=True)
    for key, text in data.items():
        (version / key).write_text(text)
    os.symlink(version.name, mount / "..data")
    for key in data:
        os.symlink(f"..data/{key}", mount / key)
    specs, errors = load_specs_folder(mount)
    assert errors == {} and sorted(s.path.name for s in specs) == sorted(data)


# The worker's model stack. (tokenizers, the Rust library alone, does reach the Airflow image: litellm needs it,
# through the Google provider's aiplatform extra; it loads no model and imports no torch.)
WORKER_ONLY = {"torch", "transformers", "diffusers", "accelerate", "torchvision", "torchao"}


def _closure(roots: list[tuple[str, set[str]]]) -> set[str]:
    """Every distribution the given (name, extras) pull in, transitively, by the installed packages' own metadata
    (the dev venv holds the whole lock, so this is the Airflow image's install set, resolved offline)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(canonicalize_name(n), frozenset(e)) for n, e in roots]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a requirement whose marker excludes this platform was never installed
        for line in requires:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return seen


def test_the_airflow_image_install_set_holds_no_worker_package() -> None:
    """docker/airflow.Dockerfile installs the airflow and beam extras: nothing they pull in, however deep (the
    Google provider brings ~100 packages), may be torch, transformers, diffusers or their loaders."""
    closure = _closure([("genbatch", {"airflow", "beam"})])
    assert {"apache-airflow", "apache-airflow-providers-google", "apache-beam"} <= closure
    assert closure & WORKER_ONLY == set()
    assert WORKER_ONLY & _closure([("genbatch", {"worker"})]) >= {"torch", "transformers"}  # the walk sees deps
