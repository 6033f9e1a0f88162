"""quality_gate and publish of a large run as worker commands (genbatch.stages.stage_jobs): the real operators
run the real ``genbatch stage`` subprocess on a synthetic run dir; on kubernetes the provider builds a CPU pod,
validated against the Kubernetes OpenAPI schema (no cluster runs here: building a pod needs none)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from genbatch.cli import stage_command
from genbatch.io import storage
from genbatch.run.state import RunState
from genbatch.stages import stage_jobs
from tests.helpers import prepared_run
from tests.unit.test_model_job_pods import _body
from tests.unit.test_pod_spec import K8S_SPEC
from tests.unit.test_quality_gates import BAD_TEXT, _text_outputs, _write_run

FAILING_GATES = {"min_nonempty_rate": 0.5, "max_duplicate_output_rate": 0.5,
                 "gates": ["empty_rate <= 0.01", "repetition_rate == 0", "pii_hits == 0", "adherence >= 0.8"]}


def _large_run(root: Path, outputs: list[dict[str, Any]], *, inline_max_rows: int = 0, **spec: Any) -> RunState:
    """A run dir whose plan sent ``len(outputs)`` items to the shards, with a threshold below that."""
    state = prepared_run(str(root), generation={"max_new_tokens": 40},
                         execution={"inline_max_rows": inline_max_rows, **spec.pop("execution", {})}, **spec)
    _write_run(state, outputs)
    plan = storage.read_json(state.layout.shard_plan)
    storage.write_json(state.layout.shard_plan, {**plan, "items": len(outputs)}, overwrite=True)
    return state


def test_the_threshold_decides_where_the_stage_runs(tmp_path: Path) -> None:
    outputs = _text_outputs(20)
    assert stage_jobs.runs_inline(_large_run(tmp_path / "a", list(outputs), inline_max_rows=20))
    assert not stage_jobs.runs_inline(_large_run(tmp_path / "b", list(outputs), inline_max_rows=19))
    assert stage_jobs.stage_command("publish", "gs://b/runs/r") == [
        "genbatch", "stage", "publish", "--run-dir", "gs://b/runs/r"]
    with pytest.raises(ValueError, match="no worker command for stage 'preprocess'"):
        stage_jobs.stage_command("preprocess", "runs/r")


def test_a_large_run_passes_and_publishes_through_the_worker_commands(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import Asset

    from genbatch.stages import model_jobs
    from operators.genbatch_operators import PublishOperator, QualityGateOperator

    commands: list[list[str]] = []
    real = model_jobs.run_model_job

    def recorded(command: list[str], what: str, timeout_s: float | None = None) -> dict[str, Any]:
        commands.append(command)  # a spy: the real command still runs, as its own process
        return real(command, what, timeout_s)

    monkeypatch.setattr(model_jobs, "run_model_job", recorded)
    state = _large_run(tmp_path / "runs", _text_outputs(20))
    root = state.layout.root
    result = QualityGateOperator(task_id="quality_gate", run_dir=root).execute({})
    assert result["passed"] is True and result["metrics"]["success_rate"] == 1.0
    published = Asset(name="genbatch_runs", uri="file:///genbatch/runs")
    events = {published: SimpleNamespace(extra=None)}  # the task's outlet event accessor: the operator sets extra
    manifest_uri = PublishOperator(task_id="publish", run_dir=root, outlets=[published]).execute(
        {"outlet_events": events})
    assert manifest_uri.endswith("/manifest.json") and storage.exists(state.layout.success)
    assert events[published].extra["counts"]["generated"] == 20
    assert commands == [stage_jobs.stage_command("quality_gate", root), stage_jobs.stage_command("publish", root)]


def test_a_failed_gate_in_the_worker_command_fails_the_task_with_the_gate_message(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.genbatch_operators import QualityGateOperator

    state = _large_run(tmp_path / "runs", _text_outputs(20, BAD_TEXT), quality=FAILING_GATES)
    with pytest.raises(AirflowFailException) as info:  # no retry: the same outputs miss the same gates
        QualityGateOperator(task_id="quality_gate", run_dir=state.layout.root).execute({})
    assert "3 of 8 quality gate(s) failed" in str(info.value)
    assert "pii_hits: measured 1, needs == 0; examples: bad-email" in str(info.value)
    assert storage.read_json(state.layout.quality_summary)["passed"] is False
    assert stage_command.main(["quality_gate", "--run-dir", state.layout.root]) == stage_jobs.EXIT_GATE_FAILED


def test_a_large_run_on_kubernetes_runs_the_stage_in_a_cpu_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from operators.genbatch_operators import QualityGateOperator

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes", "extra": {"in_cluster": false}}')
    state = _large_run(tmp_path / "runs", _text_outputs(20), execution=K8S_SPEC)
    op = QualityGateOperator(task_id="quality_gate", run_dir=state.layout.root)
    # Stand-in for the running task's context (no scheduler here): the provider reads its tracking labels.
    ti = SimpleNamespace(dag_id="batch_generation", task_id="quality_gate", map_index=-1, try_number=1)
    body = _body(op, {"ti": ti, "run_id": "manual__r", "dag": SimpleNamespace()})
    base = next(c for c in body["spec"]["containers"] if c["name"] == "base")
    assert [*base["command"], *base["args"]] == stage_jobs.stage_command("quality_gate", state.layout.root)
    assert base["image"] == K8S_SPEC["image"] and "nvidia.com/gpu" not in base["resources"]["limits"]
    assert "cloud.google.com/gke-accelerator" not in (body["spec"].get("nodeSelector") or {})
    assert base["securityContext"]["readOnlyRootFilesystem"] is True
    assert body["metadata"]["labels"]["genbatch/job"] == "quality-gate"
