"""A reject names where its row is in the user's own file (issue 21): the file and the 1-based line, blank
lines counted, for rules judged at validation and for the Beam job's rules on validated rows (real stages:
Great Expectations validation, the Beam preprocess on the FnApiRunner, the zoo's tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import run as preprocess
from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.stages.prepare import prepare_run
from genbatch.stages.validate import validate_input
from models.registry import resolve_for_spec
from models.zoo.seed import ensure_zoo_registered
from tests.contract_check import validate

pytestmark = pytest.mark.integration

PROMPT = "colour: red | material: wool | item: scarf\ndescription:"


@pytest.mark.parametrize("row_rules", ["validate", "pipeline"])
def test_rejects_carry_the_file_and_line_of_their_row(tmp_path: Path, row_rules: str) -> None:
    """``row_rules``: judged by validate_input (then the Beam job on validated rows), or all in the Beam job."""
    lines = [
        "",
        "",
        json.dumps({"id": "good-1", "prompt": PROMPT}),
        json.dumps({"id": "no-prompt"}),  # line 4: prompt_missing, judged at validation
        "   ",
        json.dumps({"id": "long-out", "prompt": PROMPT, "params": {"max_new_tokens": 1000}}),  # line 6: budget (Beam)
        json.dumps({"id": "good-2", "prompt": PROMPT}),
        '{"id": "broken", "prompt": "unterminated',  # line 8: parse_error
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n")
    registry = str(tmp_path / "registry")
    ensure_zoo_registered(registry)
    spec: dict[str, Any] = {"task": "text", "input": {"uri": str(path), "row_rules": row_rules},
                            "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
                            "generation": {"max_new_tokens": 8}, "quality": {"max_reject_rate": 0.9},
                            "output": {"uri": str(tmp_path / "runs")}}
    run_dir = prepare_run(spec, "lines", resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    layout = RunLayout(run_dir)
    rejects = {r["id"]: r for u in storage.list_uris(layout.rejects_dir)
               for r in (json.loads(x) for x in storage.iter_lines(u) if x.strip())}
    assert {k: (r["rule"], r["source"]) for k, r in rejects.items()} == {
        "no-prompt": ("prompt_missing", {"file": str(path), "line": 4}),
        "long-out": ("prompt_over_token_budget", {"file": str(path), "line": 6}),
        None: ("parse_error", {"file": str(path), "line": 8}),
    }
    assert "line 8" in rejects[None]["reason"]
    for record in rejects.values():
        validate(record, "reject", f"reject {record['id']}")
