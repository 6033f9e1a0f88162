"""The spec's ``preprocess`` section: runners, the settings each needs, and one message naming every field."""

from __future__ import annotations

from typing import Any

import pytest

from genbatch.errors import SpecError
from genbatch.run.spec import json_schema, parse_spec

MINIMAL: dict[str, Any] = {"task": "text", "input": {"uri": "in.jsonl"},
                           "model": {"name": "catalog-copy", "alias": "production"}}
GCS_RUN = {"output": {"uri": "gs://bucket/runs"},
           "model": {"name": "catalog-copy", "alias": "production", "registry": "gs://bucket/registry"}}
DATAFLOW = {"runner": "dataflow", "project": "my-project", "region": "europe-west4",
            "temp_location": "gs://bucket/beam/temp", "sdk_container_image": "europe-docker.pkg.dev/p/g/beam:1"}


def _spec(preprocess: dict[str, Any], **more: Any) -> Any:
    return parse_spec({**MINIMAL, **more, "preprocess": preprocess})


def test_inline_is_the_default_with_two_worker_processes() -> None:
    spec = parse_spec(MINIMAL)
    assert (spec.preprocess.runner, spec.preprocess.inline_workers) == ("inline", 1)


def test_row_rules_default_to_the_pipeline_on_a_distributed_runner() -> None:
    """``input.row_rules: auto``: a Dataflow, Flink or Spark run judges every row on its workers (never 50M rows
    in the Airflow worker); inline runs keep validate_input's full Data Docs. An explicit choice stands, and
    spec.json records the resolved one."""
    assert parse_spec(MINIMAL).input.row_rules == "validate"
    assert _spec(DATAFLOW, **GCS_RUN).input.row_rules == "pipeline"
    assert _spec({"runner": "flink", "flink_master": "flink-jobmanager:8081"}).input.row_rules == "pipeline"
    explicit = _spec({"runner": "flink", "flink_master": "jm:8081"}, input={"uri": "in.jsonl", "row_rules": "validate"})
    assert explicit.input.row_rules == "validate"
    assert _spec(DATAFLOW, **GCS_RUN).to_json_dict()["input"]["row_rules"] == "pipeline"


def test_a_complete_dataflow_section_on_gcs_is_accepted() -> None:
    spec = _spec({**DATAFLOW, "labels": {"team": "catalog"}, "use_public_ips": False}, **GCS_RUN)
    assert spec.preprocess.runner == "dataflow" and spec.preprocess.labels == {"team": "catalog"}


def test_dataflow_names_every_missing_or_local_field() -> None:
    with pytest.raises(SpecError) as err:
        _spec({"runner": "dataflow", "temp_location": "/tmp/beam", "staging_location": "file:///x"}, **GCS_RUN)
    msg = str(err.value)
    for needed in ("preprocess.project is required", "preprocess.region is required",
                   "preprocess.temp_location must be a gs:// URI", "preprocess.staging_location must be a gs:// URI",
                   "preprocess.sdk_container_image (or extra_packages) is required"):
        assert needed in msg, msg


def test_dataflow_needs_the_run_dir_and_registry_on_gcs() -> None:
    with pytest.raises(SpecError) as err:
        _spec(DATAFLOW)
    msg = str(err.value)
    assert "preprocess.runner dataflow needs gs:// for output.uri='runs', model.registry='.genbatch/registry'" in msg


def test_settings_of_another_runner_are_refused_not_ignored() -> None:
    with pytest.raises(SpecError) as err:
        _spec({"runner": "inline", "temp_location": "gs://b/t", "flink_master": "flink:8081"})
    msg = str(err.value)
    assert "preprocess.temp_location is a dataflow setting" in msg
    assert "preprocess.flink_master is only used with preprocess.runner: flink" in msg


def test_flink_and_spark_need_their_master() -> None:
    with pytest.raises(SpecError, match="preprocess.flink_master is required with runner flink"):
        _spec({"runner": "flink"})
    with pytest.raises(SpecError, match="preprocess.spark_master_url is required with runner spark"):
        _spec({"runner": "spark"})
    with pytest.raises(SpecError, match="preprocess.sdk_container_image is required with environment_type DOCKER"):
        _spec({"runner": "spark", "spark_master_url": "spark://m:7077", "environment_type": "DOCKER"})
    assert _spec({"runner": "flink", "flink_master": "[local]"}).preprocess.flink_master == "[local]"


@pytest.mark.parametrize("labels", [{"Team": "x"}, {"team": "Catalog"}, {"genbatch-run-id": "x"}, {"1team": "x"}])
def test_labels_follow_the_gcp_rules(labels: dict[str, str]) -> None:
    with pytest.raises(SpecError, match="preprocess.labels"):
        _spec({**DATAFLOW, "labels": labels}, **GCS_RUN)


def test_unknown_fields_are_refused_and_the_schema_lists_the_section() -> None:
    with pytest.raises(SpecError, match="preprocess.runnr: unknown field"):
        _spec({"runnr": "dataflow"})
    with pytest.raises(SpecError, match="preprocess.runner: .*'inline', 'dataflow', 'flink' or 'spark'"):
        _spec({"runner": "prism"})
    section = json_schema()["properties"]["preprocess"]
    assert section["type"] == ["object", "null"] and "Dataflow" in section["description"]
    assert section["properties"]["runner"]["enum"] == ["inline", "dataflow", "flink", "spark"]
