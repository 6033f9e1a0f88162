"""``genbatch run`` and ``genbatch check-spec`` as a user calls them, on specs that cannot run: each ends within
seconds with exit 2 and one line naming the field, the value and the fix, before any Airflow or model work
(issue 21); the toy models go only into the example registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from models.zoo.seed import ensure_zoo_registered

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path, **overrides: Any) -> Path:
    spec: dict[str, Any] = {
        "task": "text",
        "input": {"uri": str(REPO / "examples/catalog/items.jsonl")},
        "model": {"name": "catalog-copy", "alias": "production", "registry": str(tmp_path / "registry")},
        "output": {"uri": str(tmp_path / "runs")},
    }
    for section, values in overrides.items():
        spec[section] = {**spec[section], **values}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _genbatch(tmp_path: Path, *args: str, allow: Path | None = None) -> tuple[int, str]:
    """Exit code and the one ``genbatch`` line of stderr; ``allow``: an ``--allow-path`` (the shared registry
    lives outside the test's working directory)."""
    args = (*args, "--allow-path", str(allow)) if allow is not None else args
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")}
    env["NO_GCE_CHECK"] = "True"  # google-auth: no metadata-server probe (no GCE here), so no credentials at all
    proc = subprocess.run([sys.executable, "-m", "genbatch", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith("genbatch")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return proc.returncode, lines[0]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reg") / "registry"
    ensure_zoo_registered(str(path))
    return path


CASES = {
    "missing model": ({"model": {"name": "no-such-model"}},
                      "model.name: model 'no-such-model' has no versions in registry"),
    "missing alias": ({"model": {"alias": "nosuchalias"}},
                      "model.alias: model 'catalog-copy' has no alias 'nosuchalias'; known aliases: ["),
    "missing input": ({"input": {"uri": "/nonexistent/items.jsonl"}},
                      "input '/nonexistent/items.jsonl' does not exist"),
    "chat input without a chat template": ({"input": {"system_prompt": "Be brief."}},
                                           "input.system_prompt makes every row chat input, but model "
                                           "catalog-copy@2 has no chat template"),
    "gs without credentials": ({"output": {"uri": "gs://genbatch-no-creds-bucket/runs"}},
                               "output.uri 'gs://genbatch-no-creds-bucket/runs': cannot reach Google Cloud Storage"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_spec_and_run_refuse_a_spec_that_cannot_run(tmp_path: Path, registry: Path, case: str) -> None:
    overrides, message = CASES[case]
    overrides.setdefault("model", {})["registry"] = str(registry)
    spec = _spec(tmp_path, **overrides)
    for command in (["check-spec", str(spec)], ["run", str(spec), "--run-id", "r1"]):
        code, line = _genbatch(tmp_path, *command, allow=registry)
        assert code == 2 and line.startswith("genbatch: error: ") and message in line, (command, line)
    assert not (tmp_path / "runs").exists() and not (tmp_path / ".genbatch" / "airflow").exists()  # no work began


def test_a_misspelt_or_file_registry_is_refused_and_never_seeded(tmp_path: Path) -> None:
    typo = tmp_path / "registy"
    for command in ("check-spec", "run"):
        code, line = _genbatch(tmp_path, command, str(_spec(tmp_path, model={"registry": str(typo)})))
        assert code == 2 and f"model.registry '{typo}' does not exist; check the path" in line, line
        assert not typo.exists()  # the toy models go only into the example registry (.genbatch/registry)
    afile = tmp_path / "registry.json"
    afile.write_text("{}")
    code, line = _genbatch(tmp_path, "check-spec", str(_spec(tmp_path, model={"registry": str(afile)})))
    assert code == 2 and f"model.registry '{afile}' is a file" in line


def test_an_unsafe_run_id_gets_genbatchs_own_message(tmp_path: Path, registry: Path) -> None:
    code, line = _genbatch(tmp_path, "run", str(_spec(tmp_path, model={"registry": str(registry)})),
                           "--run-id", "../../x", allow=registry)
    assert code == 2 and line == ("genbatch: error: --run-id '../../x': a run id is letters, digits, '.', '_' and '-' "
                                  "(at most 128, not starting or ending with '.' or '-'); pass e.g. --run-id x")


def test_an_unfinished_run_with_another_spec_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                    registry: Path) -> None:
    from genbatch.stages.prepare import prepare_run
    from models.registry import resolve_for_spec

    spec = _spec(tmp_path, model={"registry": str(registry)})
    data = yaml.safe_load(spec.read_text())
    run_dir = Path(prepare_run({**data, "run_id": "r2"}, "r2", resolve_model=resolve_for_spec))  # started, never ran
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    data["generation"] = {"max_new_tokens": 9}
    spec.write_text(yaml.safe_dump(data))
    code, line = _genbatch(tmp_path, "run", str(spec), "--run-id", "r2", allow=registry)
    assert code == 2 and line == (f"genbatch: error: run {run_dir} was started with a different spec (sections that "
                                  "differ: generation); an unfinished run resumes only with its own spec: run it again "
                                  "with that spec (spec.json in the run dir) to resume, or use another run id")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("output", ["runs/../../etc", "/etc"])
def test_an_output_outside_the_working_directory_needs_an_explicit_allow_path(tmp_path: Path, registry: Path,
                                                                              output: str) -> None:
    spec = _spec(tmp_path, model={"registry": str(registry)}, output={"uri": output})
    resolved = str((tmp_path / output).resolve())
    for command in ("check-spec", "run"):
        code, line = _genbatch(tmp_path, command, str(spec), allow=registry)
        assert code == 2 and line == (f"genbatch: error: output.uri {output!r} resolves to {resolved}, outside "
                                      f"{tmp_path} or {registry}; use a path under it, or pass --allow-path "
                                      f"{resolved} to allow it"), line
    # the registry too: outside the working directory it needs its own --allow-path
    code, line = _genbatch(tmp_path, "check-spec", str(_spec(tmp_path, model={"registry": str(registry)})))
    assert code == 2 and line.startswith(f"genbatch: error: model.registry '{registry}' resolves to {registry}, outside")
    # allowed explicitly, check-spec passes (nothing is written by it)
    proc = subprocess.run([sys.executable, "-m", "genbatch", "check-spec", str(spec), "--allow-path", str(registry),
                           "--allow-path", resolved], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_corrupt_input_fails_the_run_once_not_three_times(tmp_path: Path) -> None:
    """Input a retry would read the same way: validate_input fails without retries (one attempt in _FAILED),
    and the run's output ends with the summary naming the reason, not under repeated poll warnings."""
    import gzip
    import json

    bad = tmp_path / "items.jsonl.gz"
    rows = "".join(json.dumps({"id": f"r{i}", "prompt": "colour: red\ndescription:"}) + "\n" for i in range(300))
    bad.write_bytes(gzip.compress(rows.encode())[:-30])
    spec = _spec(tmp_path, input={"uri": str(bad)}, model={"registry": ".genbatch/registry"})
    proc = subprocess.run([sys.executable, "-m", "genbatch", "run", str(spec), "--run-id", "corrupt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    marker = json.loads((tmp_path / "runs" / "corrupt" / "_FAILED").read_text())
    assert marker["failed_task"] == "validate_input" and marker["try_number"] == 1, marker
    assert "items.jsonl.gz is not valid gzip" in marker["reason"] and "re-compress it" in marker["reason"]
    assert (proc.stdout + proc.stderr).count("No tasks to run") <= 1
    assert proc.stdout.rstrip().endswith("}")  # the summary (with failed_marker) is the last thing printed
