"""Inputs as users bring them, through ``genbatch run`` (embedded Airflow, real Beam, real worker): a prompt
template over a product table with a system prompt (chat through the model's template) and structured output
(``generation.response_schema``, gated), and an OpenAI
Batch request file with chat and completion requests on the zoo's chat-templated model, written back as OpenAI
Batch output and error files (issue 18)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from genbatch.ops.erasure import Subject, erase
from genbatch.run.state import load_run_state
from genbatch.stages import openai_export
from tests.contract_check import check_against_contract
from tests.integration.test_batch_run import LIGHT, _read_jsonl, _run, _summary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = ("colour: {{ attributes.colour }} | material: {{ attributes.material }} | item: {{ attributes.item }}\n"
            "description:")


SYSTEM = "Answer in JSON."
PRODUCT_SCHEMA = {"type": "object", "properties": {
    "colour": {"enum": ["red", "navy", "olive", "black", "white", "green", "blue", "grey"]},
    "description": {"type": "string", "minLength": 1, "maxLength": 40}}}


def _examples(n: int) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n]]


def _records(run_dir: Path, folder: str) -> list[dict[str, Any]]:
    return [r for path in sorted((run_dir / folder).rglob("*.jsonl")) if not path.name.startswith("_")
            for r in _read_jsonl(str(path))]


def test_a_template_a_system_prompt_and_a_schema_make_the_chat_the_run_uses(tmp_path: Path) -> None:
    examples = _examples(24)
    table = [{"id": e["id"], "title": e["attributes"]["item"], "brand": "Acme", "language": "en",
              "attributes": e["attributes"]} for e in examples]
    table.append({"id": "no-material", "title": "lamp", "attributes": {"colour": "red", "item": "lamp"}})
    table.append({"id": "no-attributes", "title": "lamp"})
    source = tmp_path / "products.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in table))
    spec = {"task": "text", "input": {"uri": str(source), "template": TEMPLATE, "system_prompt": SYSTEM},
            "model": {"name": "catalog-chat", "alias": "production", "registry": ".genbatch/registry"},
            "generation": {"max_new_tokens": 64, "seed": 3, "response_schema": PRODUCT_SCHEMA},
            "sharding": {"num_shards": 1}, "quality": {"gates": ["schema_valid_rate >= 1.0"]},
            "output": {"uri": "runs"}}
    proc = _run(tmp_path, spec, "templated", env=LIGHT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _summary(proc.stdout)["counts"]["generated"] == 24
    run_dir = tmp_path / "runs" / "templated"
    # The rendered prompt is the user turn after the system prompt, and it equals the catalog's own prompt.
    shard_items = {r["id"]: r for r in _records(run_dir, "shards") if "prompt" in r}
    assert {i: r["messages"] for i, r in shard_items.items()} == {
        e["id"]: [{"role": "system", "content": SYSTEM}, {"role": "user", "content": e["prompt"]}] for e in examples}
    assert all(r["brand"] == "Acme" for r in shard_items.values())  # the columns pass through as metadata
    outputs = _records(run_dir, "outputs")
    assert sorted(r["id"] for r in outputs) == sorted(e["id"] for e in examples)
    # Structured output: every output is JSON of the schema (checked here with jsonschema), and the gate saw it.
    for record in outputs:
        jsonschema.validate(json.loads(record["output"]), PRODUCT_SCHEMA)
    summary = json.loads((run_dir / "quality/summary.json").read_text())
    assert summary["metrics"]["schema_valid_rate"] == 1.0
    assert any(g["gate"] == "schema_valid_rate >= 1" and g["passed"] for g in summary["gates"])
    assert all(r["metadata"]["title"] for r in outputs)
    rejects = {r["id"]: r for r in _records(run_dir, "rejects")}
    assert set(rejects) == {"no-material", "no-attributes"}
    assert {r["rule"] for r in rejects.values()} == {"template_field_missing"}
    assert "'material'" in rejects["no-material"]["reason"] and rejects["no-material"]["source"]["line"] == 25
    assert "'attributes'" in rejects["no-attributes"]["reason"]
    check_against_contract(str(run_dir))


def _request(custom_id: str, url: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": "gpt-4o-mini", **body}}


def _openai_file(path: Path) -> tuple[list[str], dict[str, str]]:
    """A request file as the OpenAI Batch guide writes one; returns every custom_id and the expected error codes."""
    prompts = [e["prompt"] for e in _examples(12)]
    lines: list[Any] = []
    for i, prompt in enumerate(prompts):
        lines.append(_request(f"chat-{i}", "/v1/chat/completions", messages=[{"role": "user", "content": prompt}],
                              max_tokens=24))
    for i, prompt in enumerate(prompts[:4]):
        lines.append(_request(f"completion-{i}", "/v1/completions", prompt=prompt, max_tokens=24))
    lines.append(_request("with-system", "/v1/chat/completions", max_tokens=24,
                          messages=[{"role": "system", "content": "You write catalog copy."},
                                    {"role": "user", "content": prompts[0]}]))
    errors = {
        "bad-tools": _request("bad-tools", "/v1/chat/completions", messages=[{"role": "user", "content": "x"}],
                              tools=[]),
        "bad-url": _request("bad-url", "/v1/embeddings", input="x"),
        "bad-role": _request("bad-role", "/v1/chat/completions", messages=[{"role": "robot", "content": "x"}]),
        "too-long": _request("too-long", "/v1/chat/completions", messages=[{"role": "user", "content": prompts[1]}],
                             max_tokens=1000),
        "chat-0": _request("chat-0", "/v1/chat/completions", messages=[{"role": "user", "content": "again"}]),
    }
    codes = {"bad-tools": "openai_field_unsupported", "bad-url": "openai_request_invalid",
             "bad-role": "messages_invalid", "too-long": "prompt_over_token_budget", "chat-0": "duplicate_id"}
    lines += errors.values()
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"custom_id": "broken", "method": \n'
    path.write_text(text)
    ids = [line["custom_id"] for line in lines]
    return ids, codes


def test_an_openai_batch_file_runs_through_the_dag_and_every_custom_id_ends_once(tmp_path: Path) -> None:
    ids, codes = _openai_file(tmp_path / "requests.jsonl")
    spec = {"task": "text", "input": {"uri": str(tmp_path / "requests.jsonl"), "format": "openai_batch"},
            "model": {"name": "catalog-chat", "alias": "production", "registry": ".genbatch/registry"},
            "generation": {"max_new_tokens": 24, "seed": 3}, "sharding": {"num_shards": 2},
            "quality": {"max_reject_rate": 0.5},
            "output": {"uri": "runs", "format": "openai_batch"}}
    proc = _run(tmp_path, spec, "openai", env=LIGHT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "openai"
    out = _read_jsonl(str(run_dir / "openai/output.jsonl"))
    err = _read_jsonl(str(run_dir / "openai/errors.jsonl"))
    # Every custom_id once across both files (the duplicate id is an error line beside its first use).
    seen = Counter(line["custom_id"] for line in out + err)
    assert seen == Counter(ids) + Counter([None])  # the line that is not JSON has no custom_id to give
    assert {line["custom_id"]: line["error"]["code"] for line in err if line["custom_id"] in codes} == codes
    (broken,) = [line for line in err if line["custom_id"] is None]
    assert broken["error"]["code"] == "parse_error" and broken["response"] is None
    by_id = {line["custom_id"]: line for line in out}
    chat, completion = by_id["chat-1"]["response"], by_id["completion-1"]["response"]
    assert chat["status_code"] == 200 and chat["body"]["object"] == "chat.completion"
    assert completion["body"]["object"] == "text_completion"
    # A user turn through catalog-chat's template renders to the prompt itself: the same text, greedy.
    for i in range(4):
        assert (by_id[f"chat-{i}"]["response"]["body"]["choices"][0]["message"]["content"]
                == by_id[f"completion-{i}"]["response"]["body"]["choices"][0]["text"])
    for line in out:
        assert line["error"] is None and line["response"]["body"]["model"].startswith("catalog-chat@")
        assert line["response"]["body"]["usage"]["completion_tokens"] <= 24
    # The system turn reached the model: the plan counted its tokens through the chat template.
    items = {r["id"]: r for r in _records(run_dir, "shards") if "est_tokens" in r}
    assert items["with-system"]["est_tokens"] > items["chat-0"]["est_tokens"]
    assert items["with-system"]["messages"][0] == {"role": "system", "content": "You write catalog copy."}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    kinds = {f["path"]: f["kind"] for f in manifest["files"]}
    assert kinds["openai/output.jsonl"] == "openai_output" and kinds["openai/errors.jsonl"] == "openai_errors"
    assert len(out) == manifest["counts"]["generated"]
    assert len(err) == manifest["counts"]["rejected"] + manifest["counts"]["errored"]
    check_against_contract(str(run_dir))  # every listed file by its kind, every record by its schema
    # A publish retried after the views were written writes the same bytes: create-only holds, nothing changes.
    before = (run_dir / "openai/output.jsonl").read_bytes(), (run_dir / "openai/errors.jsonl").read_bytes()
    assert openai_export.export(load_run_state(str(run_dir))) == {"output": len(out), "errors": len(err)}
    assert ((run_dir / "openai/output.jsonl").read_bytes(), (run_dir / "openai/errors.jsonl").read_bytes()) == before
    spec_json = json.loads((run_dir / "spec.json").read_text())
    assert len(spec_json["model"]["chat_template_sha256"]) == 64
    # Erasure reaches the OpenAI views too: the subject's line is gone and nothing of it is left anywhere.
    record = erase([str(tmp_path / "runs")], Subject("id", "chat-7"))
    assert record["residual_runs"] == []
    left = _read_jsonl(str(run_dir / "openai/output.jsonl")) + _read_jsonl(str(run_dir / "openai/errors.jsonl"))
    assert Counter(line["custom_id"] for line in left) == seen - Counter(["chat-7"])
