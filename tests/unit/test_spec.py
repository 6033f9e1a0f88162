"""RunSpec: loading, one message for every bad field, and the schema the Airflow form uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genbatch.errors import SpecError
from genbatch.run.spec import json_schema, load_spec, parse_spec, sanitize_run_id

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"task": "text", "input": {"uri": "in.jsonl"}, "model": {"name": "catalog-copy", "alias": "production"}}


def test_example_spec_loads_with_defaults() -> None:
    spec = load_spec(REPO / "examples" / "catalog" / "spec.yaml")
    assert spec.task == "text"
    assert spec.sharding.num_shards == 4
    assert spec.model.alias == "production" and spec.model.version is None
    assert spec.execution.backend == "local"


def test_three_bad_fields_fail_in_one_message_naming_each_and_the_allowed_values() -> None:
    bad = {**MINIMAL, "task": "video", "input": {"uri": "x", "format": "xml"}, "sharding": {"num_shards": 0}}
    with pytest.raises(SpecError) as err:
        parse_spec(bad)
    msg = str(err.value)
    assert "3 invalid field(s)" in msg
    assert "task:" in msg and "'text' or 'image'" in msg and "'video'" in msg
    assert "input.format:" in msg and "'parquet'" in msg and "'xml'" in msg
    assert "sharding.num_shards:" in msg and "greater than or equal to 1" in msg


def test_unknown_and_missing_fields_are_named() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"task": "text", "input": {"uri": "x"}, "modle": {}})
    msg = str(err.value)
    assert "modle: unknown field" in msg
    assert "model: required field is missing" in msg


def test_alias_and_version_are_exclusive() -> None:
    with pytest.raises(SpecError, match="exactly one of model.alias"):
        parse_spec({**MINIMAL, "model": {"name": "m", "alias": "production", "version": 2}})
    assert parse_spec({**MINIMAL, "model": {"name": "m", "version": 2}}).model.version == 2


def test_yaml_errors_and_missing_files_are_spec_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [text\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_json_schema_is_flat_and_validates_the_example() -> None:
    import jsonschema
    import yaml

    schema = json_schema()
    assert "$ref" not in json.dumps(schema)
    data = yaml.safe_load((REPO / "examples" / "catalog" / "spec.yaml").read_text())
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "task": "video"}, schema)


def test_params_hash_tracks_generation_params_only() -> None:
    a = parse_spec(MINIMAL)
    b = parse_spec({**MINIMAL, "sharding": {"num_shards": 9}})
    c = parse_spec({**MINIMAL, "generation": {"max_new_tokens": 7}})
    assert a.params_hash() == b.params_hash() != c.params_hash()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("manual__2026-01-01T00:00:00+00:00", "manual__2026-01-01T00-00-00-00-00"), ("../../etc", "etc"), ("///", "run")],
)
def test_sanitize_run_id(raw: str, expected: str) -> None:
    assert sanitize_run_id(raw) == expected


def test_a_null_optional_section_means_its_defaults_and_a_null_required_one_is_refused() -> None:
    import jsonschema

    spec = parse_spec({**MINIMAL, "generation": None, "output": None, "run_id": None})
    assert spec.generation == parse_spec(MINIMAL).generation and spec.output.uri == "runs"
    jsonschema.validate({**MINIMAL, "generation": None, "output": None}, json_schema())
    with pytest.raises(SpecError, match="input:"):
        parse_spec({**MINIMAL, "input": None})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**MINIMAL, "input": None}, json_schema())


def test_every_top_level_field_has_a_description_the_form_shows() -> None:
    properties = json_schema()["properties"]
    assert {k for k, v in properties.items() if len(v.get("description", "")) < 20} == set()


def test_the_old_max_bytes_reads_as_max_file_bytes() -> None:
    """Spec files and the spec.json of earlier runs name the one-file limit ``max_bytes``."""
    base = {"task": "text", "model": {"name": "m", "alias": "production"}, "output": {"uri": "runs"}}
    spec = parse_spec({**base, "input": {"uri": "in.jsonl", "max_bytes": 1234}})
    assert spec.input.max_file_bytes == 1234
    assert "max_bytes" not in spec.to_json_dict()["input"]
    with pytest.raises(SpecError, match="max_bytes is the old name of max_file_bytes"):
        parse_spec({**base, "input": {"uri": "in.jsonl", "max_bytes": 1, "max_file_bytes": 2}})
