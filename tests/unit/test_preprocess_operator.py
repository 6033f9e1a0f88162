"""The preprocess task's launch: job names, labels, options per runner, and the operator the DAG builds.

The Dataflow tests build the apache-beam provider's real ``BeamRunPythonPipelineOperator`` from a spec
and run its real ``execute`` up to the point where it defers on the job; only the cloud is stood in
for: the launcher interpreter is a small script that records its command line and prints the line the
Dataflow runner prints when it has submitted a job (no network, no credentials), and the Dataflow API
listing is served by googleapiclient's own ``HttpMockSequence``.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

from genbatch.run.layout import RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState
from genbatch.stages.beam_launch import dataflow_job_name, job_labels, pipeline_options
from operators.beam import PreprocessOperator

RUN_DIR = "gs://bucket/runs/Nightly_2026-12-01T02:00"
DATAFLOW = {"runner": "dataflow", "project": "my-project", "region": "europe-west4",
            "temp_location": "gs://bucket/beam/temp", "staging_location": "gs://bucket/beam/staging",
            "sdk_container_image": "europe-docker.pkg.dev/my-project/genbatch/beam-worker:1.4",
            "service_account": "genbatch-beam@my-project.iam.gserviceaccount.com", "machine_type": "n2-highmem-4",
            "max_workers": 20, "use_public_ips": False, "labels": {"team": "catalog"}}


def _state(preprocess: dict[str, Any], run_dir: str = RUN_DIR, run_id: str = "Nightly_2026-12-01T02:00") -> RunState:
    spec = parse_spec({"task": "text", "input": {"uri": "gs://bucket/in.jsonl"}, "preprocess": preprocess,
                       "model": {"name": "catalog-copy", "alias": "production", "registry": "gs://bucket/registry"},
                       "output": {"uri": "gs://bucket/runs"}})
    model = ModelVersion(name="catalog-copy", version=3, uri="gs://bucket/registry/catalog-copy/versions/3")
    return RunState(run_id=run_id, spec=spec, model=model, layout=RunLayout(run_dir), num_shards=4)


# --- names, labels, options (pure) -------------------------------------------------------------


def test_job_names_follow_dataflow_rules_and_are_stable_per_run_dir() -> None:
    name = dataflow_job_name("Nightly_2026-12-01T02:00", RUN_DIR)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    assert name.startswith("genbatch-preprocess-nightly-2026-12-01t02-00-")
    assert name == dataflow_job_name("Nightly_2026-12-01T02:00", RUN_DIR)  # a retry finds the same job
    assert dataflow_job_name("Run_1", "gs://b/Run_1") != dataflow_job_name("run-1", "gs://b/run-1")
    long = dataflow_job_name("x" * 128, "gs://b/r")
    assert len(long) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", long)
    assert re.fullmatch(r"genbatch-preprocess-[0-9a-f]{8}", dataflow_job_name("___", "gs://b/r"))


def test_labels_carry_run_model_and_spec_within_gcp_rules() -> None:
    labels = job_labels(_state(DATAFLOW))
    assert labels["genbatch-run-id"] == "nightly_2026-12-01t02-00" and labels["team"] == "catalog"
    assert labels["genbatch-model"] == "catalog-copy" and labels["genbatch-model-version"] == "3"
    assert re.fullmatch(r"[0-9a-f]{16}", labels["genbatch-params-hash"])
    assert all(re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", k) and re.fullmatch(r"[a-z0-9_-]{0,63}", v)
               for k, v in labels.items())


def test_inline_runs_the_fnapi_runner_with_worker_processes() -> None:
    args = beam_options_to_args(pipeline_options(_state({"inline_workers": 3}), RUN_DIR))
    assert args == [f"--run_dir={RUN_DIR}", "--token_counts=auto", "--direct_num_workers=3",
                    "--direct_running_mode=multi_processing"]
    args = beam_options_to_args(pipeline_options(_state({}), RUN_DIR))  # the default: no worker processes
    assert args == [f"--run_dir={RUN_DIR}", "--token_counts=auto", "--direct_num_workers=1",
                    "--direct_running_mode=in_memory"]


def test_flink_and_spark_get_their_master_and_worker_environment() -> None:
    image = "europe-docker.pkg.dev/p/genbatch/beam-worker:1"
    flink = pipeline_options(_state({"runner": "flink", "flink_master": "flink:8081", "sdk_container_image": image}),
                             RUN_DIR)
    assert beam_options_to_args(flink)[2:] == ["--flink_master=flink:8081", "--environment_type=DOCKER",
                                               f"--environment_config={image}"]
    spark = pipeline_options(_state({"runner": "spark", "spark_master_url": "local[2]"}), RUN_DIR)
    assert beam_options_to_args(spark)[2:] == ["--spark_master_url=local[2]", "--environment_type=LOOPBACK"]


def test_the_dag_task_keeps_its_template_and_output_contract() -> None:
    op = PreprocessOperator(task_id="preprocess", run_dir="{{ ti.xcom_pull('prepare_run') }}")
    assert op.template_fields == ("run_dir",)


def test_a_committed_plan_is_returned_without_launching_anything(tmp_path: Path) -> None:
    layout = RunLayout(str(tmp_path / "run"))  # no spec.json either: the plan alone answers
    Path(layout.shard_plan).parent.mkdir(parents=True)
    Path(layout.shard_plan).write_text(json.dumps({"shards": [{"shard": 0}, {"shard": 2}]}))
    assert PreprocessOperator(task_id="preprocess", run_dir=layout.root).execute({}) == [0, 2]


# --- Dataflow: the provider's operator, built for real ------------------------------------------

SUBMITTED_JOB = "2026-12-01_02_00_07-1234567890123456789"
LAUNCHER = """#!/bin/sh
# Stands in for the Dataflow submission (the cloud): records argv, answers the provider's version probe,
# and prints what the Dataflow runner prints once the job is submitted.
if [ "$1" = "-c" ]; then echo 2.77.0; exit 0; fi
printf '%s\\n' "$@" > "$(dirname "$0")/argv.txt"
echo "INFO:apache_beam.runners.dataflow.internal.apiclient:Submitted job: {job}" >&2
"""


class _TaskInstance:
    """The slice of the task-instance API the provider touches while launching (XCom push)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


@pytest.fixture
def google() -> Any:
    """The Google provider (the airflow extra installs it); an ImportError here is a setup error, not a skip."""
    import importlib

    return importlib.import_module("airflow.providers.google.cloud.operators.dataflow")


def test_dataflow_operator_carries_the_job_request(google: Any) -> None:
    from operators.beam import dataflow_operator

    op = dataflow_operator(_state(DATAFLOW), RUN_DIR, py_interpreter="/venv/bin/python")
    config = op.dataflow_config
    assert (op.runner, op.py_file, op.py_options, op.deferrable) == ("DataflowRunner", "beam_jobs.preprocess",
                                                                     ["-m"], True)
    assert (config.job_name, config.append_job_name) == (dataflow_job_name("Nightly_2026-12-01T02:00", RUN_DIR), False)
    assert (config.project_id, config.location, config.wait_until_finished) == ("my-project", "europe-west4", True)
    assert config.service_account == "genbatch-beam@my-project.iam.gserviceaccount.com"
    assert config.check_if_running == google.CheckJobRunning.WaitForRun


def test_dataflow_launch_command_and_deferral(google: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.google.cloud.triggers.dataflow import DataflowJobStateCompleteTrigger
    from airflow.sdk.exceptions import TaskDeferred

    from operators.beam import dataflow_operator

    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "google-cloud-platform://")  # an empty GCP connection
    launcher = tmp_path / "python"
    launcher.write_text(LAUNCHER.format(job=SUBMITTED_JOB))
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    op = dataflow_operator(_state(DATAFLOW), RUN_DIR, py_interpreter=str(launcher))
    ti = _TaskInstance()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    name = dataflow_job_name("Nightly_2026-12-01T02:00", RUN_DIR)
    assert argv[:3] == ["-m", "beam_jobs.preprocess", "--runner=DataflowRunner"]
    options = set(argv[3:])
    for expected in (f"--run_dir={RUN_DIR}", "--token_counts=auto", "--project=my-project", "--region=europe-west4",
                     f"--job_name={name}", "--temp_location=gs://bucket/beam/temp",
                     "--staging_location=gs://bucket/beam/staging",
                     "--sdk_container_image=europe-docker.pkg.dev/my-project/genbatch/beam-worker:1.4",
                     "--service_account_email=genbatch-beam@my-project.iam.gserviceaccount.com",
                     "--machine_type=n2-highmem-4", "--max_num_workers=20", "--no_use_public_ips",
                     "--no_wait_until_finish", "--labels=team=catalog", "--labels=genbatch-stage=preprocess",
                     "--labels=genbatch-run-id=nightly_2026-12-01t02-00"):
        assert expected in options, (expected, argv)
    assert not any(a.startswith(("--extra_package", "--network", "--dataflow_kms_key")) for a in argv)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DataflowJobStateCompleteTrigger) and deferred.value.method_name == "execute_complete"
    assert (trigger.job_id, trigger.project_id, trigger.location) == (SUBMITTED_JOB, "my-project", "europe-west4")
    assert ti.xcom["dataflow_job_id"] == SUBMITTED_JOB


def test_execute_complete_fails_on_the_trigger_error_and_reads_the_plan(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowException

    layout = RunLayout(str(tmp_path / "run"))
    op = PreprocessOperator(task_id="preprocess", run_dir=layout.root)
    with pytest.raises(AirflowException, match="Dataflow preprocess job failed: JOB_STATE_FAILED"):
        op.execute_complete({}, {"status": "error", "message": "JOB_STATE_FAILED"})
    with pytest.raises(Exception, match="ended without shards/_plan.json"):
        op.execute_complete({}, {"status": "success", "message": "JOB_STATE_DONE"})
    Path(layout.shard_plan).parent.mkdir(parents=True)
    Path(layout.shard_plan).write_text(json.dumps({"shards": [{"shard": 0}, {"shard": 1}]}))
    assert op.execute_complete({}, {"status": "success", "message": "JOB_STATE_DONE"}) == [0, 1]


def test_a_retry_finds_the_active_job_of_its_name_across_pages(google: Any) -> None:
    from googleapiclient import discovery
    from googleapiclient.http import HttpMockSequence

    from operators.dataflow import active_job

    name = dataflow_job_name("Nightly_2026-12-01T02:00", RUN_DIR)
    pages = [  # the Dataflow API (the cloud), served from memory
        ({"status": "200"}, json.dumps({"jobs": [{"id": "1", "name": f"{name}-old", "currentState": "JOB_STATE_RUNNING"}],
                                        "nextPageToken": "p2"})),
        ({"status": "200"}, json.dumps({"jobs": [{"id": "2", "name": name, "currentState": "JOB_STATE_RUNNING"}]})),
        ({"status": "200"}, json.dumps({"jobs": [{"id": "3", "name": "other", "currentState": "JOB_STATE_RUNNING"}]})),
    ]
    http = HttpMockSequence(pages)
    api = discovery.build("dataflow", "v1b3", http=http, static_discovery=True)
    job = active_job(api, name=name, project_id="my-project", location="europe-west4")
    assert job is not None and job["id"] == "2"
    assert active_job(api, name=name, project_id="my-project", location="europe-west4") is None
