"""Constrained decoding on the real tiny text model: with ``generation.response_schema`` every output of the whole
example catalog parses and validates (by ``jsonschema``), greedy or sampled, in the own decoding loop and in
``model.generate``, at the tightest budget the spec allows; without a schema the same model writes prose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from genbatch.errors import SpecError
from genbatch.run.response_schema import compile_schema
from models.runners import Item, TextRunner

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models/zoo/catalog-copy/v2"
COLOURS = ["red", "navy", "olive", "black", "white", "green", "blue", "grey", "yellow", "pink", "brown", "beige"]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "colour": {"enum": COLOURS},
        "item": {"type": "string", "minLength": 1, "maxLength": 16},
        "description": {"type": "string", "minLength": 1, "maxLength": 60},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "minItems": 1, "maxItems": 3},
        "price": {"type": "number"},
        "in_stock": {"type": "boolean"},
    },
}


def _catalog() -> list[Item]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()]
    return [Item(id=r["id"], prompt=r["prompt"], seed=100 + i, params={}, negative_prompt=None, record=r)
            for i, r in enumerate(rows)]


def _outputs(runner: TextRunner, items: list[Item], batch: int = 64) -> list[str]:
    return [o["output"] for i in range(0, len(items), batch) for o in runner.run_batch(items[i:i + batch])]


def _runner(**generation: Any) -> TextRunner:
    gen = {"max_new_tokens": 96, "temperature": 0.0, "top_p": 1.0, "response_schema": SCHEMA, **generation}
    return TextRunner(MODEL, generation=gen, precision="fp32", device="cpu")


def _all_valid(outputs: list[str]) -> None:
    bad = []
    for text in outputs:
        try:
            jsonschema.validate(json.loads(text), SCHEMA)
        except (ValueError, jsonschema.ValidationError) as exc:
            bad.append((text, str(exc)[:80]))
    assert bad == [], bad[:3]


def test_every_output_of_the_example_catalog_validates_greedy_and_sampled() -> None:
    items = _catalog()
    assert len(items) == 500
    _all_valid(_outputs(_runner(), items))
    _all_valid(_outputs(_runner(temperature=1.2, top_p=0.95), items[:128]))


def test_model_generate_takes_the_same_mask_as_the_own_loop() -> None:
    items = _catalog()[:48]
    own = _runner()
    plain = _runner()
    plain.own_loop = ""  # the path models the own loop does not cover take: model.generate with a logits processor
    assert _outputs(own, items, 16) == _outputs(plain, items, 16)


def test_at_the_tightest_budget_every_output_still_closes() -> None:
    shortest = compile_schema(SCHEMA).min_chars()
    outputs = _outputs(_runner(max_new_tokens=shortest), _catalog()[:64])
    _all_valid(outputs)


def test_without_a_schema_the_model_writes_prose() -> None:
    """The control: the mask, not the model, makes the JSON."""
    runner = TextRunner(MODEL, generation={"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0}, precision="fp32",
                        device="cpu")
    outputs = _outputs(runner, _catalog()[:16])
    assert not any(text.startswith("{") for text in outputs)


def test_a_tokenizer_that_cannot_write_a_schema_character_is_refused() -> None:
    with pytest.raises(SpecError, match="no single token for"):  # a GenbatchError: the worker exits 2, no retries
        _runner(response_schema={"type": "object", "properties": {"farbe": {"enum": ["weiß"]}}})
