"""The GitHub Actions workflows: valid against the published schema, and every command they run is ours.

The workflows cannot run here, so what they do is checked statically: each file validates against
SchemaStore's ``github-workflow.json`` as vendored by the ``check-jsonschema`` package (no network at
test time), every job has a timeout, and every ``run:`` command is either a docker/gcloud/helm step
(what only CI has) or a ``make`` target that this suite exercises (``make test`` is what ``.ci/run``
runs; ``make lint`` is run for real below).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ALLOWED_TOOLS = {"docker", "gcloud", "helm"}
# make targets the workflows may run, and how this suite exercises each.
EXERCISED_TARGETS = {"test": ".ci/run runs it (it is this suite)", "lint": "test_make_lint_passes runs it"}


def _load(path: Path) -> dict[str, Any]:
    """YAML as GitHub reads it: PyYAML (YAML 1.1) turns the ``on:`` key into True; undo that."""
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def _vendored_schema(name: str, package: str = "vendor") -> dict[str, Any]:
    root = resources.files("check_jsonschema.builtin_schemas").joinpath(package, f"{name}.json")
    return dict(json.loads(root.read_text(encoding="utf-8")))


def _steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


def _commands(script: str) -> list[list[str]]:
    """Shell commands of a ``run:`` script: lines joined at backslashes, split at ``&&``, ``||``, ``;``."""
    joined = re.sub(r"\\\n", " ", script)
    out = []
    for line in joined.splitlines():
        for part in re.split(r"&&|\|\||;", line):
            if part.strip() and not part.strip().startswith("#"):
                out.append(shlex.split(part))
    return out


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+):(?!=)", text, re.MULTILINE)}


def test_there_are_ci_release_and_deploy_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml", "deploy.yml"}


def test_the_schema_is_the_vendored_schemastore_one() -> None:
    schema = _vendored_schema("github-workflows")
    assert schema["$id"] == "https://json.schemastore.org/github-workflow.json"
    assert "jobs" in schema["properties"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_validates_against_the_github_workflow_schema(path: Path) -> None:
    workflow = _load(path)
    for schema in (_vendored_schema("github-workflows"),
                   _vendored_schema("github-workflows-require-timeout", "custom")):
        validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(workflow), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message[:300]}" for e in errors)


def test_check_jsonschema_cli_agrees() -> None:
    """The same check with the tool's own YAML 1.2 parser, offline (built-in schemas only)."""
    cli = Path(sys.executable).parent / "check-jsonschema"
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        proc = subprocess.run([str(cli), "--builtin-schema", schema, *map(str, WORKFLOWS)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_mistake_is_caught() -> None:
    """The schema check has teeth: a step with both ``run`` and ``uses`` and a bad ``runs-on`` fail."""
    workflow = _load(REPO / ".github/workflows/ci.yml")
    workflow["jobs"]["lint"]["steps"].append({"run": "make lint", "uses": "actions/checkout@v4"})
    workflow["jobs"]["lint"]["timeout-minutes"] = "soon"
    validator = jsonschema.Draft7Validator(_vendored_schema("github-workflows"))
    assert list(validator.iter_errors(workflow))


def test_every_run_command_is_a_make_target_we_exercise_or_a_deploy_tool() -> None:
    targets = _make_targets()
    used: set[str] = set()
    for path in WORKFLOWS:
        for job_id, step in _steps(_load(path)):
            for argv in _commands(step.get("run", "")):
                where = f"{path.name}:{job_id}: {' '.join(argv)}"
                assert argv[0] in ALLOWED_TOOLS | {"make"}, f"{where}: not a make target or docker/gcloud/helm"
                if argv[0] == "make":
                    named = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
                    assert len(named) == 1, where
                    assert named[0] in targets, f"{where}: no such Makefile target"
                    used.add(named[0])
    assert used == set(EXERCISED_TARGETS), used
    assert re.search(r"^make test$", (REPO / ".ci/run").read_text(), re.MULTILINE)


def test_ci_jobs_test_lint_build_and_promote() -> None:
    ci = _load(REPO / ".github/workflows/ci.yml")
    runs = {job: [s.get("run") for s in spec["steps"] if "run" in s] for job, spec in ci["jobs"].items()}
    assert runs["test"] == ["make test"] and runs["lint"] == ["make lint"]
    assert "workflow_call" in ci["on"] and "pull_request" in ci["on"]

    release = _load(REPO / ".github/workflows/release.yml")
    jobs = release["jobs"]
    assert jobs["ci"]["uses"] == "./.github/workflows/ci.yml"
    images = jobs["images"]
    assert images["needs"] == "ci" and sorted(images["strategy"]["matrix"]["image"]) == ["airflow", "worker"]
    build = " ".join(s.get("run", "") for s in images["steps"])
    assert "--file docker/${{ matrix.image }}.Dockerfile" in build
    assert '"$REGISTRY/${{ matrix.image }}:${{ github.sha }}"' in build  # tagged by commit
    assert "hashFiles('constraints.txt')" in build  # both images carry the one lock's hash
    assert 'docker push "$REGISTRY/${{ matrix.image }}:${{ github.sha }}"' in build
    auth = next(s for s in images["steps"] if s.get("uses", "").startswith("google-github-actions/auth"))
    assert all("secrets." in v for v in auth["with"].values())  # registry credentials come from secrets
    assert images["permissions"]["id-token"] == "write"

    # staging first, production after it, both the same commit, through one reusable deploy workflow
    assert jobs["deploy-staging"]["needs"] == "images"
    assert jobs["deploy-production"]["needs"] == "deploy-staging"
    for job, env in (("deploy-staging", "staging"), ("deploy-production", "production")):
        assert jobs[job]["uses"] == "./.github/workflows/deploy.yml"
        assert jobs[job]["with"] == {"environment": env, "image_tag": "${{ github.sha }}"}

    deploy = _load(REPO / ".github/workflows/deploy.yml")["jobs"]["deploy"]
    # The environment gates the job: production's required reviewers approve before it runs.
    assert deploy["environment"]["name"] == "${{ inputs.environment }}"
    helm = " ".join(s.get("run", "") for s in deploy["steps"])
    assert "helm upgrade --install airflow" in helm and '--set-string defaultAirflowTag="$TAG"' in helm
    assert "--values docker/helm/airflow-values.yaml" in helm


def test_both_dockerfiles_install_the_same_lock() -> None:
    for name in ("worker", "airflow"):
        text = (REPO / "docker" / f"{name}.Dockerfile").read_text()
        assert "COPY" in text and "constraints.txt" in text and "RUN docker/pip-install.sh " in text


@pytest.mark.slow
def test_make_lint_passes() -> None:
    """The lint job's command, run here (the install stamp is taken as is: `make test` set it up)."""
    proc = subprocess.run(["make", "-o", ".venv/.installed-stamp", "lint"], cwd=REPO, capture_output=True,
                          text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
