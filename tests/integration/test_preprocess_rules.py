"""Acceptance: a fixture with a row for every reject rule → exactly the expected rejects and shards.

The real chain on a real model version: GX validation (``genbatch.stages.validate.validate_input``) then
the Beam preprocess job (in-process FnApiRunner) counting tokens with catalog-copy's tokenizer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import run
from beam_jobs.records import PREPROCESS_RULES
from genbatch.quality.expectations import RULES
from genbatch.run.row_shape import SHAPE_RULES
from genbatch.stages.validate import validate_input
from models.registry import register_version
from tests.helpers import prepared_run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LONG = "colour: red | material: wool | item: scarf | style: classic | finish: matte " * 4 + "\ndescription:"


def _line(**row: Any) -> bytes:
    return json.dumps(row).encode()


# (raw JSONL line, expected rule or None when it ends in a shard)
FIXTURE: list[tuple[bytes, str | None]] = [
    (_line(id="ok-1", prompt="colour: red | item: scarf\ndescription:"), None),
    (_line(id="ok-2", prompt="  colour:  navy \r\n item: tote  ", seed=5, params={"max_new_tokens": 8}), None),
    (_line(id="dup-a", prompt="first wins"), None),
    (_line(id="ok-3", prompt="Cafe\u0301 lamp", negative_prompt="blurry", category="home"), None),
    (b'{"id": "bad-json", "prompt": "unterminated', "parse_error"),
    (_line(prompt="no id"), "id_missing"),
    (_line(id=7, prompt="x"), "id_not_string"),
    (_line(id="../etc/passwd", prompt="x"), "id_unsafe"),
    (_line(id="p-missing"), "prompt_missing"),
    (_line(id="p-int", prompt=42), "prompt_not_string"),
    (_line(id="p-empty", prompt="  "), "prompt_empty"),
    (_line(id="p-long", prompt="x" * 5000), "prompt_too_long"),
    (_line(id="p-ctrl", prompt="abc\u202edef"), "prompt_control_chars"),
    (_line(id="p-jinja", prompt="Hi {{ config.SECRET }}"), "prompt_template_markers"),
    (_line(id="s-neg", prompt="x", seed=-1), "seed_invalid"),
    (_line(id="m-list", prompt="x", params=[1]), "params_not_object"),
    (_line(id="m-key", prompt="x", params={"model_path": "/etc"}), "params_key_not_allowed"),
    (_line(id="m-val", prompt="x", params={"max_new_tokens": 0}), "params_value_invalid"),
    (_line(id="n-int", prompt="x", negative_prompt=3), "negative_prompt_not_string"),
    (_line(id="dup-a", prompt="second loses"), "duplicate_id"),
    (_line(id="tok-long", prompt=LONG), "prompt_over_token_budget"),
    (_line(id="tok-room", prompt=LONG, params={"max_new_tokens": 1}), None),  # fits with fewer new tokens
    # A duplicate of a row rejected earlier is the id's first *valid* row: it is kept.
    (_line(id="tok-first", prompt=LONG), "prompt_over_token_budget"),
    (_line(id="tok-first", prompt="short now"), None),
    (_line(id="s-neg", prompt="fixed seed"), None),
    (_line(id="dup-a", prompt="third loses"), "duplicate_id"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return register_version(str(tmp_path_factory.mktemp("registry")), "catalog-copy", REPO / "models/zoo/catalog-copy/v1")


def _prepare(root: Path, model: Any, num_shards: int) -> Any:
    data = root / "input.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(b"\n".join(line for line, _ in FIXTURE) + b"\n")
    return prepared_run(str(root / "runs"), num_shards=num_shards, model=model,
                        input={"uri": str(data), "max_reject_fraction": 1.0},
                        generation={"max_new_tokens": 40, "seed": 3})


def _jsonl(path: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_every_rule_yields_exactly_its_rejects_and_the_counts_reconcile(tmp_path: Path, model: Any) -> None:
    # The shape rules (templates, chat, OpenAI Batch lines) need a shape: tests/unit/test_row_shape.py covers them
    # in both paths (validate_input's suite and this job's judge).
    assert {rule for _, rule in FIXTURE} - {None} == (set(RULES) - set(SHAPE_RULES)) | set(PREPROCESS_RULES)
    state = _prepare(tmp_path, model, num_shards=3)
    layout = state.layout
    validate_input(layout.root)
    plan = run(["--run-dir", layout.root])

    rejects = _jsonl(layout.rejects_part("validate")) + _jsonl(layout.rejects_part("preprocess"))
    got = {r["row_index"]: r["rule"] for r in rejects}
    assert len(got) == len(rejects)
    expected = {i: rule for i, (_, rule) in enumerate(FIXTURE) if rule is not None}
    assert got == expected
    for r in _jsonl(layout.rejects_part("preprocess")):
        assert set(r) == {"id", "row_index", "reason", "rule", "row", "source"}  # source: the row's file and line
        raw = json.loads(FIXTURE[r["row_index"]][0])
        assert r["row"] == raw, "a reject carries the raw row"
    budget = next(r for r in rejects if r["rule"] == "prompt_over_token_budget")
    assert "budget of 88" in budget["reason"] and "context 128" in budget["reason"]

    items = [it for s in range(3) for it in _jsonl(layout.shard_input(s, 3))]
    kept = {i for i, (_, rule) in enumerate(FIXTURE) if rule is None}
    assert sorted(it["row_index"] for it in items) == sorted(kept)
    assert set(got).isdisjoint(kept) and set(got) | kept == set(range(len(FIXTURE)))  # each row exactly once
    by_id = {it["id"]: it for it in items}
    assert by_id["dup-a"]["prompt"] == "first wins" and by_id["tok-first"]["prompt"] == "short now"
    assert by_id["ok-2"]["prompt"] == "colour: navy\nitem: tote" and by_id["ok-2"]["seed"] == 5
    assert by_id["ok-3"]["prompt"] == "Caf\u00e9 lamp" and by_id["ok-3"]["category"] == "home"
    # Real token counts (not characters / 4), and cost = prompt tokens + max_new_tokens.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REPO / "models/zoo/catalog-copy/v1", local_files_only=True)
    for it in items:
        assert it["est_tokens"] == len(tok(it["prompt"])["input_ids"])
        assert it["est_cost"] == it["est_tokens"] + it["params"].get("max_new_tokens", 40)

    assert plan["rows"] == {"accepted": 11, "sharded": 7, "rejected": 4, "fanned_out": 0}
    assert plan["rejects_by_rule"] == {"duplicate_id": 2, "prompt_over_token_budget": 2}
    assert plan["tokens"]["token_counts"] == "tokenizer" and plan["tokens"]["context_length"] == 128
    assert [s["items"] for s in plan["shards"]] == [len(_jsonl(layout.shard_input(s, 3))) for s in range(3)]
    assert sum(s["est_cost"] for s in plan["shards"]) == plan["est_cost_total"] == sum(it["est_cost"] for it in items)
    assert not Path(layout.path("_tmp")).exists()
    report = json.loads(Path(layout.validation_report).read_text())
    counts = Counter(rule for rule in got.values())
    assert report["rows"]["input"] == len(FIXTURE) == plan["rows"]["accepted"] + sum(report["rejects_by_rule"].values())
    assert sum(counts.values()) == report["rows"]["rejected"] + plan["rows"]["rejected"]


def test_token_counts_estimate_skips_the_budget(tmp_path: Path, model: Any) -> None:
    state = _prepare(tmp_path, model, num_shards=2)
    validate_input(state.layout.root)
    plan = run(["--run-dir", state.layout.root, "--token-counts=estimate"])
    assert plan["tokens"]["token_counts"] == "estimate"
    assert plan["rejects_by_rule"] == {"duplicate_id": 3, "prompt_over_token_budget": 0}
