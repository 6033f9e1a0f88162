"""The embedded mode proves each Param schema's content valid once, not at every serialisation or copy of the DAG;
every value is still validated against it on every call (genbatch.cli.embedded.check_each_schema_once)."""

from __future__ import annotations

import copy as copy_module

import jsonschema
import pytest
from jsonschema import validators

from genbatch.cli.embedded import check_each_schema_once
from genbatch.run.spec import json_schema


def test_a_checked_schema_is_not_checked_again_but_values_still_are(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = validators.validator_for({})
    calls: list[int] = []
    original = cls.check_schema

    def counting(schema: object, *args: object, **kwargs: object) -> None:
        calls.append(id(schema))
        original(schema, *args, **kwargs)

    monkeypatch.setattr(cls, "check_schema", staticmethod(counting))
    check_each_schema_once()
    schema = json_schema()["properties"]["generation"]
    for _ in range(5):
        jsonschema.validate({"max_new_tokens": 8}, schema)
    assert calls == [id(schema)]
    with pytest.raises(jsonschema.ValidationError, match="max_new_tokens"):
        jsonschema.validate({"max_new_tokens": -1}, schema)  # the value is still judged every time
    bad = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}
    for _ in range(2):  # a schema that fails the check is never remembered as checked
        with pytest.raises(jsonschema.SchemaError):
            jsonschema.validate({}, bad)
    assert calls.count(id(bad)) == 2
    check_each_schema_once()  # idempotent: the wrapper is not wrapped again
    jsonschema.validate({"max_new_tokens": 8}, schema)
    assert calls.count(id(schema)) == 1
    # Airflow deep-copies params per task: a copy with the same content counts as checked ...
    copy = copy_module.deepcopy(schema)
    jsonschema.validate({"max_new_tokens": 8}, copy)
    assert id(copy) not in calls
    # ... and a changed schema does not: its content is checked before it is trusted
    copy["properties"]["max_new_tokens"]["minimum"] = "not a number"
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.validate({"max_new_tokens": 8}, copy)
    assert calls.count(id(copy)) == 1
