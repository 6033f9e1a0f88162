"""Airflow ``Param``s generated from the RunSpec JSON schema: one form field per spec section."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from genbatch.run.spec import json_schema

# The form's defaults: the example catalog run. Everything else defaults from the schema.
FORM_DEFAULTS: dict[str, Any] = {
    "task": "text",
    "input": {"uri": "examples/catalog/items.jsonl"},
    "model": {"name": "catalog-copy", "alias": "production"},
}
_DROP = {"default", "title", "description"}


def _types(schema: dict[str, Any]) -> list[Any]:
    """A schema's ``type`` as a list (optional sections say ``[X, "null"]``)."""
    kind = schema.get("type")
    return kind if isinstance(kind, list) else [kind]


def _default_of(schema: dict[str, Any]) -> Any:
    if "default" in schema:
        return schema["default"]
    if "object" in _types(schema):
        return {k: _default_of(v) for k, v in schema.get("properties", {}).items() if "default" in v}
    return None


def spec_params() -> dict[str, Param]:
    """One Param per RunSpec field; its description (the form's help text) comes from the spec."""
    schema = json_schema()
    params = {}
    for name, prop in schema["properties"].items():
        default = FORM_DEFAULTS.get(name, _default_of(prop))
        kwargs = {k: v for k, v in prop.items() if k not in _DROP}
        params[name] = Param(default, description=prop["description"], **kwargs)
    return params
