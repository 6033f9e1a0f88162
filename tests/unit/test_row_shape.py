"""Rows as users bring them (templates over columns, chat messages, OpenAI Batch lines) become contract rows.

Every malformed row ends as exactly one reject naming its rule and the field, through the real GX suite
(``validate_rows``, the validate_input stage) and through the Beam job's per-file judge (``judged_lines``,
``input.row_rules: pipeline``) alike. The template sandbox's refusals and bounds are each shown to fire.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest

from beam_jobs.raw_input import RowRules, judged_lines, read_jsonl
from genbatch.errors import SpecError
from genbatch.io.input_rows import iter_input_rows
from genbatch.quality.expectations import RULES, ValidationOutcome, validate_rows
from genbatch.run.prompt_template import RENDER_SECONDS, TemplateFailed, compiled_template
from genbatch.run.row_shape import SHAPE_RULES, RowShape
from genbatch.run.spec import parse_spec

CATALOG_TEMPLATE = ("colour: {{ attributes.colour }} | material: {{ attributes.material }} | item: {{ title }}\n"
                    "description:")


def _jsonl(rows: list[Any]) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _verdicts(outcome: ValidationOutcome) -> dict[int, tuple[str | None, str]]:
    out: dict[int, tuple[str | None, str]] = {i: (None, "") for i, _ in outcome.accepted}
    for r in outcome.rejects:
        assert r.index not in out, f"row {r.index} ended twice"
        out[r.index] = (r.rule, r.reason)
    return out


def _both_paths(data: bytes, shape: RowShape) -> tuple[dict[int, tuple[str | None, str]], ValidationOutcome]:
    """The verdicts of validate_input's suite, checked equal to the Beam judge's on the same bytes."""
    outcome = validate_rows(iter_input_rows(data, "jsonl", source="in.jsonl"), max_reject_fraction=1.0, shape=shape)
    verdicts = _verdicts(outcome)
    judged = list(judged_lines(read_jsonl(io.BytesIO(data), "in.jsonl"), RowRules(4000, shape), "in.jsonl"))
    assert [rule for _line, rule in judged] == [verdicts[i][0] for i in sorted(verdicts)]
    return verdicts, outcome


def _judge_corpus(corpus: list[tuple[str, Any, str | None, str]], shape: RowShape) -> ValidationOutcome:
    """Each (label, row, rule, text the reason must hold) judged by both paths: the rule, and the field named."""
    verdicts, outcome = _both_paths(_jsonl([row for _label, row, _rule, _needle in corpus]), shape)
    for position, (label, _row, rule, needle) in enumerate(corpus):
        got_rule, reason = verdicts[position]
        assert got_rule == rule, (label, reason)
        assert needle in reason, (label, reason)
    return outcome


# --- templates ---------------------------------------------------------------------------------


TEMPLATE_ROWS: list[tuple[str, Any, str | None, str]] = [
    ("good", {"id": "t1", "title": "chair", "attributes": {"colour": "red", "material": "oak"}}, None, ""),
    ("column missing", {"id": "t2", "attributes": {"colour": "red", "material": "oak"}}, "template_field_missing",
     "'title'"),
    ("column null", {"id": "t3", "title": None, "attributes": {"colour": "red", "material": "oak"}},
     "template_field_missing", "'title'"),
    ("nested key missing", {"id": "t4", "title": "chair", "attributes": {"colour": "red"}}, "template_field_missing",
     "'material'"),
    ("wrong type", {"id": "t5", "title": "chair", "attributes": "red oak"}, "template_field_missing", "attribute"),
    ("value with jinja markers", {"id": "t6", "title": "{{ 7*7 }}", "attributes": {"colour": "r", "material": "o"}},
     "prompt_template_markers", "'{{'"),
    ("renders too long", {"id": "t7", "title": "x" * 5000, "attributes": {"colour": "r", "material": "o"}},
     "prompt_too_long", "prompt"),
    ("no id", {"title": "chair", "attributes": {"colour": "red", "material": "oak"}}, "id_missing", "id"),
    ("broken json", b'{"id": "t9", "title": ', "parse_error", "could not be read"),
]


def test_a_template_makes_each_rows_prompt_and_bad_rows_end_once_with_the_field_named() -> None:
    outcome = _judge_corpus(TEMPLATE_ROWS, RowShape(template=CATALOG_TEMPLATE))
    (accepted,) = [row for _i, row in outcome.accepted]
    assert accepted["prompt"] == "colour: red | material: oak | item: chair\ndescription:"
    assert accepted["title"] == "chair" and accepted["attributes"] == {"colour": "red", "material": "oak"}
    (missing,) = [r for r in outcome.rejects if r.rule == "template_field_missing" and r.id == "t2"]
    assert missing.to_json()["row"] == TEMPLATE_ROWS[1][1]  # the row as the user gave it


@pytest.mark.parametrize(("label", "source", "fired"), [
    ("python internals", "{{ title.__class__.__mro__ }}", "unsafe"),
    ("a list changed in place", "{{ tags.append(1) }}", "unsafe"),
    ("a file", "{% include '/etc/passwd' %}", "no loader"),
    ("nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "range() loops ran over"),
    ("a huge string", "{{ title * 10000000 }}", "repeats a value"),
    ("a huge padding", "{{ title.ljust(100000000) }}", "a number over"),
    ("filters that grow", "{{ title" + "|replace('x','xxxxxxxxxx')" * 8 + " }}", "over the 1,000,000 bound"),
    ("a huge power", "{{ 10 ** 100000 }}", "exponent"),
    ("endless recursion", "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "RecursionError"),
])
def test_the_sandbox_refuses_and_bounds_each_attack(label: str, source: str, fired: str) -> None:
    row = {"id": "a1", "title": "x", "tags": []}
    outcome = validate_rows([next(iter_input_rows(json.dumps(row).encode(), "jsonl"))], max_reject_fraction=1.0,
                            shape=RowShape(template=source))
    (reject,) = outcome.rejects
    assert reject.rule == "template_failed", label
    assert fired in reject.reason, (label, reject.reason)


def test_a_render_that_runs_long_is_stopped_by_the_time_budget() -> None:
    # 9 million silent steps over the row's own list: no range(), no output, so only the clock can stop it.
    slow = "{% for a in items %}{% for b in items %}{% if a|string|upper == 'Q' %}q{% endif %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateFailed, match="over its 1 s budget"):
        compiled_template(slow).render_row({"items": list(range(3000))})
    assert time.monotonic() - started < RENDER_SECONDS * 3


def test_a_template_syntax_error_stops_the_spec_naming_the_line() -> None:
    with pytest.raises(SpecError, match=r"input.template is not a valid Jinja template.*line 2"):
        parse_spec({"task": "text", "input": {"uri": "in.jsonl", "template": "ok\n{{ title "},
                    "model": {"name": "m", "alias": "production"}})


# --- OpenAI Batch lines ------------------------------------------------------------------------


def _request(custom_id: Any, body: dict[str, Any], url: str = "/v1/chat/completions", **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
OPENAI_ROWS: list[tuple[str, Any, str | None, str]] = [
    ("chat", _request("c1", {**CHAT, "max_tokens": 20, "temperature": 0.2, "seed": 5}), None, ""),
    ("completion", _request("c2", {"model": "m", "prompt": "hello"}, "/v1/completions"), None, ""),
    ("text parts", _request("c3", {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
     None, ""),
    ("no custom_id", {"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}, "openai_request_invalid",
     "custom_id"),
    ("numeric custom_id", _request(7, CHAT), "openai_request_invalid", "custom_id"),
    ("GET", {**_request("c6", CHAT), "method": "GET"}, "openai_request_invalid", "method"),
    ("embeddings", _request("c7", {"input": "x"}, "/v1/embeddings"), "openai_request_invalid", "/v1/embeddings"),
    ("body not object", _request("c8", "hello"), "openai_request_invalid", "body"),  # type: ignore[arg-type]
    ("prompt to chat", _request("c9", {"prompt": "x"}), "openai_request_invalid", "body.messages"),
    ("unsupported body field", _request("c10", {**CHAT, "logprobs": True, "tools": []}), "openai_field_unsupported",
     "logprobs, tools"),
    ("unsupported line field", _request("c11", CHAT, priority=1), "openai_field_unsupported", "priority"),
    ("n of 3", _request("c12", {**CHAT, "n": 3}), "openai_field_unsupported", "body.n"),
    ("image part", _request("c13", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
     "openai_field_unsupported", "image_url"),
    ("message name", _request("c14", {"messages": [{"role": "user", "content": "x", "name": "bob"}]}),
     "openai_field_unsupported", "name"),
    ("role robot", _request("c15", {"messages": [{"role": "robot", "content": "x"}]}), "messages_invalid", "robot"),
    ("messages empty", _request("c16", {"messages": []}), "messages_invalid", "non-empty"),
    ("no user turn", _request("c17", {"messages": [{"role": "system", "content": "x"}]}), "messages_invalid", "user"),
    ("content number", _request("c18", {"messages": [{"role": "user", "content": 3}]}), "messages_invalid",
     "content"),
    ("temperature out of bounds", _request("c19", {**CHAT, "temperature": 9}), "params_value_invalid",
     "temperature"),
    ("unsafe custom_id", _request("../c20", CHAT), "id_unsafe", "id"),
    ("not json", b'{"custom_id": "c21", ', "parse_error", "could not be read"),
]


def test_openai_batch_lines_map_to_rows_and_bad_lines_end_once_naming_rule_and_field() -> None:
    outcome = _judge_corpus(OPENAI_ROWS, RowShape(openai_batch=True))
    rows = {row["id"]: row for _i, row in outcome.accepted}
    assert rows["c1"]["messages"] == [{"role": "user", "content": "hello"}]
    assert rows["c1"]["params"] == {"max_new_tokens": 20, "temperature": 0.2} and rows["c1"]["seed"] == 5
    assert rows["c1"]["openai_request"] == {"url": "/v1/chat/completions", "model": "gpt-4o-mini", "max_tokens": 20}
    assert rows["c2"]["prompt"] == "hello" and "messages" not in rows["c2"]
    assert rows["c3"]["messages"] == [{"role": "user", "content": "hi"}]
    by_custom_id = {r.id: r.rule for r in outcome.rejects}
    assert by_custom_id["c6"] == "openai_request_invalid"  # a reject is named by its custom_id


def test_a_system_prompt_leads_chat_rows_and_turns_plain_rows_into_chat() -> None:
    data = _jsonl([{"id": "p1", "prompt": "hello"},
                   {"id": "p2", "messages": [{"role": "user", "content": "hi"}]},
                   {"id": "p3", "messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "x"}]}])
    _verdicts_, outcome = _both_paths(data, RowShape(system_prompt="Be brief."))
    rows = {row["id"]: row for _i, row in outcome.accepted}
    assert rows["p1"]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    assert rows["p2"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert rows["p3"]["messages"][0] == {"role": "system", "content": "own"}  # a row's own system turn wins
    assert rows["p1"]["prompt"] == "Be brief.\nhello"  # what the prompt rules and token estimates read


def test_chat_rows_for_a_model_without_a_chat_template_are_each_one_reject() -> None:
    data = _jsonl([{"id": "p1", "prompt": "hello"}, {"id": "p2", "messages": [{"role": "user", "content": "hi"}]}])
    verdicts, _outcome = _both_paths(data, RowShape(chat_template=False))
    assert verdicts[0] == (None, "")
    assert verdicts[1][0] == "chat_template_missing" and "chat template" in verdicts[1][1]


def test_every_shape_rule_is_covered_here_and_ordered_before_the_row_rules() -> None:
    # template_failed: test_the_sandbox_refuses_and_bounds_each_attack; chat_template_missing: the test above
    covered = {r for *_x, r, _n in TEMPLATE_ROWS + OPENAI_ROWS} | {"chat_template_missing", "template_failed"}
    assert set(SHAPE_RULES) <= covered
    assert RULES[1:1 + len(SHAPE_RULES)] == SHAPE_RULES


@pytest.mark.parametrize(("section", "message"), [
    ({"task": "image", "input": {"uri": "x.jsonl", "system_prompt": "s"}}, "input.system_prompt need task 'text'"),
    ({"task": "image", "input": {"uri": "x.jsonl"}, "output": {"format": "openai_batch"}},
     "output.format openai_batch need task 'text'"),
    ({"task": "text", "input": {"uri": "x.jsonl", "format": "openai_batch", "template": "{{ a }}"}},
     "does not apply to input.format openai_batch"),
])
def test_specs_that_mix_shapes_wrongly_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({**section, "model": {"name": "m", "alias": "production"}})
