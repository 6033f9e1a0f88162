"""``generation.response_schema``: the JSON Schema subset's automaton accepts exactly the JSON it should, knows
how far each state is from complete, and refuses schemas outside the subset by name."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from genbatch.errors import SpecError
from genbatch.quality.metrics import schema_valid
from genbatch.run.response_schema import ResponseSchemaError, compile_schema
from genbatch.run.spec import parse_spec

PRODUCT = {
    "type": "object",
    "properties": {
        "colour": {"enum": ["red", "navy", "olive"]},
        "title": {"type": "string", "minLength": 1, "maxLength": 20},
        "price": {"type": "number"},
        "stock": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "sale": {"type": "boolean"},
    },
    "required": ["colour", "title"],
}
GOOD = [
    {"colour": "red", "title": "oak chair", "price": 12.5, "stock": 3, "tags": ["a", "b"], "sale": True},
    {"colour": "olive", "title": "x", "price": -0.25, "stock": 0, "tags": [], "sale": False},
    {"colour": "navy", "title": "lamp", "price": 10, "stock": -7, "tags": ["12345678", "b", "c"], "sale": False},
]
BAD = [
    '{"colour": "blue", "title": "x", "price": 1, "stock": 1, "tags": [], "sale": true}',  # not in the enum
    '{"colour": "red", "title": "", "price": 1, "stock": 1, "tags": [], "sale": true}',  # minLength
    '{"colour": "red", "title": "x", "price": 01, "stock": 1, "tags": [], "sale": true}',  # leading zero
    '{"colour": "red", "title": "x", "price": 1, "stock": 1.5, "tags": [], "sale": true}',  # integer
    '{"colour": "red", "title": "x", "price": 1, "stock": 1, "tags": ["a", "b", "c", "d"], "sale": true}',  # maxItems
    '{"colour": "red", "title": "x", "price": 1, "stock": 1, "tags": [], "sale": yes}',
    '{"title": "x", "colour": "red", "price": 1, "stock": 1, "tags": [], "sale": true}',  # order is the schema's
    '{"colour": "red", "title": "x", "price": 1, "stock": 1, "tags": [], "sale": true}}',  # nothing after the end
]


def _canonical(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)  # ", " and ": " separators: what the automaton writes


@pytest.mark.parametrize("value", GOOD)
def test_canonical_json_of_the_schema_is_accepted_and_complete(value: dict[str, Any]) -> None:
    schema = compile_schema(PRODUCT)
    state = schema.feed(schema.start, _canonical(value))
    assert state is not None and schema.complete(state) and schema.min_close(state) == 0
    jsonschema.validate(value, PRODUCT)  # the fixture itself is valid by the reference validator


@pytest.mark.parametrize("text", BAD)
def test_anything_else_is_refused_at_the_first_wrong_character(text: str) -> None:
    schema = compile_schema(PRODUCT)
    state = schema.feed(schema.start, text)
    assert state is None or not schema.complete(state)


def test_min_close_is_exact_for_the_shortest_completion() -> None:
    schema = compile_schema(PRODUCT)
    shortest = '{"colour": "red", "title": "a", "price": 0, "stock": 0, "tags": [], "sale": true}'
    assert schema.min_chars() == len(shortest)
    for cut in range(len(shortest)):
        state = schema.feed(schema.start, shortest[:cut])
        assert state is not None
        assert schema.min_close(state) <= len(shortest) - cut  # never more than one real completion needs


def test_the_shortest_completion_from_any_state_really_completes() -> None:
    """Greedily follow the cheapest character from a few states: min_close characters later it is complete."""
    schema = compile_schema(PRODUCT)
    alphabet = sorted(set(',: []{}"-.0123456789abcdefghijklmnopqrstuvwxyz') | schema.literal_chars())
    for prefix in ('{"colour": "n', '{"colour": "red", "title": "oak', '{"colour": "red", "title": "a", "price": 1.'):
        state = schema.feed(schema.start, prefix)
        assert state is not None
        need = schema.min_close(state)
        for _ in range(need):
            options = [(schema.min_close(s), ch, s) for ch in alphabet if (s := schema.step(state, ch)) is not None]
            _cost, _ch, state = min(options, key=lambda o: (o[0], o[1]))
        assert schema.complete(state), prefix


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "x+"}}}, "pattern"),
    ({"type": "object", "properties": {"a": {"type": "null"}}}, "type 'null' is not supported"),
    ({"type": "object"}, "needs properties"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True}, "additionalProperties"),
    ({"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 2}, "minItems 3 and maxItems 2"),
    ({"enum": []}, "non-empty list"),
])
def test_schemas_outside_the_subset_are_refused_by_name(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ResponseSchemaError, match=message):
        compile_schema(schema)
    with pytest.raises(SpecError, match=message):
        parse_spec({"task": "text", "input": {"uri": "x.jsonl"}, "model": {"name": "m", "alias": "production"},
                    "generation": {"response_schema": schema}})


def test_a_budget_below_the_shortest_json_stops_the_spec() -> None:
    with pytest.raises(SpecError, match="raise max_new_tokens to at least 81"):
        parse_spec({"task": "text", "input": {"uri": "x.jsonl"}, "model": {"name": "m", "alias": "production"},
                    "generation": {"response_schema": PRODUCT, "max_new_tokens": 40}})


def test_the_metric_checks_with_jsonschema_not_the_automaton() -> None:
    assert schema_valid(_canonical(GOOD[0]), PRODUCT)
    assert schema_valid('{"colour":"red","title":"x"}', PRODUCT)  # valid JSON Schema-wise, though not canonical
    assert not schema_valid(BAD[0], PRODUCT)
    assert not schema_valid('{"colour": "red", "title": "x"', PRODUCT)  # cut short
    assert not schema_valid("", PRODUCT)
