"""operators/beam.py: the provider's BeamRunPythonPipelineOperator set up for beam_jobs.preprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("airflow.providers.apache.beam")

from airflow.providers.apache.beam.hooks.beam import beam_options_to_args  # noqa: E402
from airflow.providers.apache.beam.operators import beam as provider  # noqa: E402

from operators.beam import PlanShardsOperator, preprocess_operator  # noqa: E402


@pytest.fixture
def no_google_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider 6.3.1 refuses to build any Beam operator without the google provider installed."""
    if not provider.GOOGLE_PROVIDER:
        monkeypatch.setattr(provider.BeamDataflowMixin, "__init__", lambda self: None)


def test_factory_runs_the_module_with_run_dir_and_runner(no_google_guard: None) -> None:
    op = preprocess_operator(task_id="preprocess", run_dir="{{ ti.xcom_pull('prepare_run') }}",
                             pipeline_options={"direct_num_workers": 2}, py_interpreter="/venv/bin/python")
    assert isinstance(op, provider.BeamRunPythonPipelineOperator)
    assert (op.py_file, op.py_options, op.runner, op.py_interpreter) == (
        "beam_jobs.preprocess", ["-m"], "FnApiRunner", "/venv/bin/python")
    assert op.pipeline_options == {"run_dir": "{{ ti.xcom_pull('prepare_run') }}", "token_counts": "auto",
                                   "direct_num_workers": 2}
    assert "pipeline_options" in op.template_fields  # run_dir is rendered from XCom at run time
    args = beam_options_to_args(op.pipeline_options)
    assert args == ["--run_dir={{ ti.xcom_pull('prepare_run') }}", "--token_counts=auto", "--direct_num_workers=2"]


def test_factory_passes_dataflow_settings_through(no_google_guard: None) -> None:
    op = preprocess_operator(run_dir="gs://b/runs/r", runner="DataflowRunner",
                             pipeline_options={"temp_location": "gs://b/tmp"},
                             dataflow_config={"project_id": "p", "location": "europe-west4"}, retries=3)
    assert op.runner == "DataflowRunner" and op.retries == 3
    assert op.dataflow_config == {"project_id": "p", "location": "europe-west4"}
    assert op.pipeline_options["temp_location"] == "gs://b/tmp"


def test_plan_shards_operator_lists_the_plan_shards(tmp_path: Path) -> None:
    plan = tmp_path / "run" / "shards" / "_plan.json"
    plan.parent.mkdir(parents=True)
    plan.write_text(json.dumps({"shards": [{"shard": 0}, {"shard": 1}, {"shard": 2}]}))
    op = PlanShardsOperator(task_id="plan_shards", run_dir=str(tmp_path / "run"))
    assert op.execute({}) == [0, 1, 2]
