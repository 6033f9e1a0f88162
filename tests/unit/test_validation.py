"""The input contract suite: each bad row ends as exactly one reject, verdicts come from GX."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import great_expectations as gx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genbatch.errors import ShardInputError
from genbatch.io.input_rows import RawRow, iter_input_rows
from genbatch.quality.expectations import DEFAULT_PARAM_KEYS, RULES, InputSchemaError, Reject, ValidationOutcome, validate_rows
from genbatch.run.row_shape import SHAPE_RULES

RULE_FIELD = {
    "parse_error": "could not be read",
    "id_missing": "id",
    "id_not_string": "id",
    "id_unsafe": "id",
    "prompt_missing": "prompt",
    "prompt_not_string": "prompt",
    "prompt_empty": "prompt",
    "prompt_too_long": "prompt",
    "prompt_control_chars": "prompt",
    "prompt_template_markers": "prompt",
    "seed_invalid": "seed",
    "params_not_object": "params",
    "params_key_not_allowed": "params",
    "params_value_invalid": "params.",
    "negative_prompt_not_string": "negative_prompt",
}


def _line(**row: Any) -> bytes:
    return json.dumps(row).encode()


# (label, raw JSONL line, expected rule or None for accepted)
CORPUS: list[tuple[str, bytes, str | None]] = [
    ("good", _line(id="good-1", prompt="a red chair"), None),
    ("good full", _line(id="A.b_c:d-2", prompt="tab\tand\nnewline", negative_prompt="blurry", seed=0,
                        params={"temperature": 0.7, "top_p": 0.9}, extra={"kept": True}), None),
    ("good max seed", _line(id="g3", prompt="x", seed=2**63 - 1), None),
    ("good nulls", _line(id="g4", prompt="x", seed=None, params=None, negative_prompt=None), None),
    ("good unicode", _line(id="g5", prompt="Stuhl, rot \u00e9 \u4e2d\u6587 \U0001f600 { single }"), None),
    ("good crlf in prompt", _line(id="g6", prompt="line1\r\nline2"), None),
    ("good empty params", _line(id="g7", prompt="x", params={}), None),
    ("good 128-char id", _line(id="a" * 128, prompt="x"), None),
    ("broken json", b'{"id": "b1", "prompt": "unterminated', "parse_error"),
    ("not an object", b'["b2", "prompt"]', "parse_error"),
    ("invalid utf-8", b'{"id": "b3", "prompt": "\xc3\x28"}', "parse_error"),
    ("raw NUL byte", b'{"id": "b4", "prompt": "a\x00b"}', "parse_error"),
    ("lone surrogate", b'{"id": "b5", "prompt": "\\ud800 half"}', "parse_error"),
    ("id missing", _line(prompt="x"), "id_missing"),
    ("id null", _line(id=None, prompt="x"), "id_missing"),
    ("id int", _line(id=7, prompt="x"), "id_not_string"),
    ("id bool", _line(id=True, prompt="x"), "id_not_string"),
    ("id slash", _line(id="a/b", prompt="x"), "id_unsafe"),
    ("id traversal", _line(id="../etc/passwd", prompt="x"), "id_unsafe"),
    ("id dotdot", _line(id="..", prompt="x"), "id_unsafe"),
    ("id inner dotdot", _line(id="a..b", prompt="x"), "id_unsafe"),
    ("id space", _line(id="a b", prompt="x"), "id_unsafe"),
    ("id empty", _line(id="", prompt="x"), "id_unsafe"),
    ("id trailing newline", _line(id="abc\n", prompt="x"), "id_unsafe"),
    ("id rtl override", _line(id="abc\u202egpj.exe", prompt="x"), "id_unsafe"),
    ("id nul escape", _line(id="a\u0000b", prompt="x"), "id_unsafe"),
    ("id too long", _line(id="a" * 129, prompt="x"), "id_unsafe"),
    ("prompt missing", _line(id="p1"), "prompt_missing"),
    ("prompt null", _line(id="p2", prompt=None), "prompt_missing"),
    ("prompt int", _line(id="p3", prompt=42), "prompt_not_string"),
    ("prompt list", _line(id="p4", prompt=["a"]), "prompt_not_string"),
    ("prompt empty", _line(id="p5", prompt=""), "prompt_empty"),
    ("prompt blank", _line(id="p6", prompt=" \n\t "), "prompt_empty"),
    ("prompt unicode blank", _line(id="p6u", prompt="\u3000\xa0\u2028"), "prompt_empty"),
    ("prompt 10 MB", _line(id="p7", prompt="x" * 10_000_000), "prompt_too_long"),
    ("prompt NUL escape", _line(id="p8", prompt="a\u0000b"), "prompt_control_chars"),
    ("prompt escape char", _line(id="p9", prompt="\x1b[31mred"), "prompt_control_chars"),
    ("prompt lone CR", _line(id="p10", prompt="a\rb"), "prompt_control_chars"),
    ("prompt RTL override", _line(id="p11", prompt="abc\u202edef"), "prompt_control_chars"),
    ("prompt bidi isolate", _line(id="p12", prompt="abc\u2066def"), "prompt_control_chars"),
    ("prompt jinja expr", _line(id="p13", prompt="Hi {{ config.SECRET }}"), "prompt_template_markers"),
    ("prompt jinja stmt", _line(id="p14", prompt="{% for x in y %}"), "prompt_template_markers"),
    ("prompt jinja close", _line(id="p15", prompt="end }}"), "prompt_template_markers"),
    ("seed 2**63", _line(id="s1", prompt="x", seed=2**63), "seed_invalid"),
    ("seed -1", _line(id="s2", prompt="x", seed=-1), "seed_invalid"),
    ("seed true", _line(id="s3", prompt="x", seed=True), "seed_invalid"),
    ("seed false", _line(id="s4", prompt="x", seed=False), "seed_invalid"),
    ("seed float", _line(id="s5", prompt="x", seed=5.0), "seed_invalid"),
    ("seed string", _line(id="s6", prompt="x", seed="5"), "seed_invalid"),
    ("seed huge", _line(id="s7", prompt="x", seed=10**40), "seed_invalid"),
    ("seed huge negative", _line(id="s8", prompt="x", seed=-(10**40)), "seed_invalid"),
    ("params list", _line(id="m1", prompt="x", params=[1, 2]), "params_not_object"),
    ("params string", _line(id="m2", prompt="x", params="temperature=1"), "params_not_object"),
    ("params forbidden key", _line(id="m3", prompt="x", params={"temperature": 1, "model_path": "/etc"}),
     "params_key_not_allowed"),
    ("params value out of bounds", _line(id="m4", prompt="x", params={"temperature": -1}), "params_value_invalid"),
    ("negative int", _line(id="n1", prompt="x", negative_prompt=3), "negative_prompt_not_string"),
    ("first rule wins", _line(prompt="x" * 5000, seed=-1, params=[1]), "id_missing"),
    ("prompt rule order", _line(id="o1", prompt="{{ \u0000 }}" + "x" * 5000), "prompt_too_long"),
]


@pytest.fixture(scope="module")
def corpus_outcome() -> ValidationOutcome:
    data = b"\xef\xbb\xbf" + b"\r\n\r\n".join(line for _label, line, _rule in CORPUS) + b"\r\n"
    return validate_rows(iter_input_rows(data, "jsonl"))


def _verdicts(outcome: ValidationOutcome) -> dict[int, str | None]:
    verdicts: dict[int, str | None] = {index: None for index, _row in outcome.accepted}
    for reject in outcome.rejects:
        assert reject.index not in verdicts, f"row {reject.index} ended in two places"
        verdicts[reject.index] = reject.rule
    return verdicts


def test_every_row_ends_in_exactly_one_place(corpus_outcome: ValidationOutcome) -> None:
    verdicts = _verdicts(corpus_outcome)
    assert sorted(verdicts) == list(range(len(CORPUS)))
    assert len(corpus_outcome.accepted) + len(corpus_outcome.rejects) == len(CORPUS)
    report = corpus_outcome.report
    assert report["row_count"] == len(CORPUS)
    assert report["accepted_count"] + report["rejected_count"] == report["row_count"]


@pytest.mark.parametrize(("position", "label", "rule"), [(i, c[0], c[2]) for i, c in enumerate(CORPUS)])
def test_corpus_row_verdict(corpus_outcome: ValidationOutcome, position: int, label: str, rule: str | None) -> None:
    assert _verdicts(corpus_outcome)[position] == rule, label
    if rule is None:
        return
    (reject,) = [r for r in corpus_outcome.rejects if r.index == position]
    assert RULE_FIELD[rule] in reject.reason, reject.reason
    assert len(reject.reason) < 600
    record = reject.to_json()
    assert set(record) == {"id", "reason", "rule", "row", "row_index"}
    json.dumps(record, ensure_ascii=False).encode("utf-8")  # writable as UTF-8 JSONL


def test_every_rule_is_covered_by_the_corpus() -> None:
    # The shape rules (templates, chat, OpenAI Batch lines) need a shape: tests/unit/test_row_shape.py covers them.
    assert {rule for _label, _line, rule in CORPUS} - {None} == set(RULES) - set(SHAPE_RULES)


def test_reasons_name_the_bad_value_escaped(corpus_outcome: ValidationOutcome) -> None:
    by_label = {label: position for position, (label, _line, _rule) in enumerate(CORPUS)}
    reasons = {r.index: r.reason for r in corpus_outcome.rejects}
    assert "'../etc/passwd'" in reasons[by_label["id traversal"]]
    assert "path separator" in reasons[by_label["id traversal"]]
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in reasons[by_label["id rtl override"]]
    assert "\u202e" not in reasons[by_label["prompt RTL override"]]  # shown escaped, never raw
    assert "U+0000 (NUL)" in reasons[by_label["prompt NUL escape"]]
    assert "'{{' at position 3" in reasons[by_label["prompt jinja expr"]]
    assert "9223372036854775808" in reasons[by_label["seed 2**63"]]
    assert "a boolean True" in reasons[by_label["seed true"]]
    assert "'model_path'" in reasons[by_label["params forbidden key"]]
    assert "10000000 characters, over the limit of 4000" in reasons[by_label["prompt 10 MB"]]
    assert "broken JSON" in reasons[by_label["broken json"]]
    assert all(len(reason) < 600 for reason in reasons.values())  # the 10 MB prompt is not echoed


def test_rejects_keep_the_row_and_id(corpus_outcome: ValidationOutcome) -> None:
    by_index = {r.index: r for r in corpus_outcome.rejects}
    seed_reject = by_index[[label for label, _l, _r in CORPUS].index("seed -1")]
    assert seed_reject.id == "s2" and seed_reject.row == {"id": "s2", "prompt": "x", "seed": -1}
    parse_reject = by_index[[label for label, _l, _r in CORPUS].index("broken json")]
    assert parse_reject.id is None and parse_reject.row is None


def test_accepted_rows_pass_through_unchanged(corpus_outcome: ValidationOutcome) -> None:
    accepted = dict(corpus_outcome.accepted)
    assert accepted[1] == {
        "id": "A.b_c:d-2",
        "prompt": "tab\tand\nnewline",
        "negative_prompt": "blurry",
        "seed": 0,
        "params": {"temperature": 0.7, "top_p": 0.9},
        "extra": {"kept": True},
    }


def test_report_is_gx_result_summarised(corpus_outcome: ValidationOutcome) -> None:
    report = corpus_outcome.report
    json.dumps(report)
    assert report["gx_version"] == gx.__version__
    assert report["success"] is False
    assert report["rejects_by_rule"] == dict(Counter(r.rule for r in corpus_outcome.rejects))
    assert list(report["rejects_by_rule"]) == [rule for rule in RULES if rule in report["rejects_by_rule"]]
    types = {e["type"] for e in report["expectations"]}
    assert {
        "expect_table_row_count_to_be_between",
        "expect_column_to_exist",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_be_between",
    } <= types
    for entry in report["expectations"]:
        assert entry["rule"] in RULES or entry["rule"] in ("table_row_count", "id_column", "prompt_column")
        assert entry["exception"] is None
    # Each row rule's GX unexpected count covers at least the rows rejected for that rule.
    flagged = Counter[str]()
    for entry in report["expectations"]:
        if entry["rule"] in RULES:
            flagged[entry["rule"]] += entry["unexpected_count"] or 0
    for rule, count in report["rejects_by_rule"].items():
        assert flagged[rule] >= count, rule


def test_all_good_input_passes() -> None:
    rows = [RawRow(i, {"id": f"r{i}", "prompt": f"prompt {i}"}) for i in range(5)]
    outcome = validate_rows(rows)
    assert [i for i, _row in outcome.accepted] == [0, 1, 2, 3, 4]
    assert outcome.rejects == []
    assert outcome.report["success"] is True


def test_indices_come_from_the_raw_rows() -> None:
    rows = [
        RawRow(10, {"id": "a", "prompt": "x"}),
        RawRow(20, {"id": "b/c", "prompt": "x"}),
        RawRow(30, None, "broken JSON: something"),
    ]
    outcome = validate_rows(rows)
    assert [i for i, _row in outcome.accepted] == [10]
    assert [(r.index, r.rule) for r in outcome.rejects] == [(20, "id_unsafe"), (30, "parse_error")]


def test_hand_built_rows_with_surrogates_or_non_dicts_are_parse_errors() -> None:
    rows = [
        RawRow(0, {"id": "a", "prompt": "ok"}),
        RawRow(1, {"id": "b", "prompt": "bad \ud800"}),
        RawRow(2, ["not", "a", "dict"]),  # type: ignore[arg-type]
    ]
    outcome = validate_rows(rows)
    assert [(r.index, r.rule) for r in outcome.rejects] == [(1, "parse_error"), (2, "parse_error")]
    assert "surrogate" in outcome.rejects[0].reason


def test_limits_are_configurable() -> None:
    rows = [
        RawRow(0, {"id": "a", "prompt": "x" * 10}),
        RawRow(1, {"id": "b", "prompt": "x" * 11}),
        RawRow(2, {"id": "c", "prompt": "x", "params": {"top_p": 0.5}}),
        RawRow(3, {"id": "d", "prompt": "x", "params": {"temperature": 1}}),
    ]
    outcome = validate_rows(rows, max_prompt_chars=10, allowed_param_keys={"top_p"})
    assert [i for i, _row in outcome.accepted] == [0, 2]
    assert [(r.index, r.rule) for r in outcome.rejects] == [(1, "prompt_too_long"), (3, "params_key_not_allowed")]
    assert "over the limit of 10" in outcome.rejects[0].reason
    assert DEFAULT_PARAM_KEYS >= {"temperature", "max_new_tokens", "num_inference_steps", "guidance_scale"}


# --- table-level failures ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\n   \r\n", b"\xef\xbb\xbf"])
def test_empty_input_stops_the_run(data: bytes) -> None:
    with pytest.raises(InputSchemaError, match="input has no rows: in.jsonl is empty") as info:
        validate_rows(iter_input_rows(data, "jsonl"), source="in.jsonl")
    assert isinstance(info.value, ShardInputError)
    assert info.value.report is not None and info.value.report["row_count"] == 0


def test_schema_drift_prompt_renamed() -> None:
    rows = [RawRow(i, {"id": f"r{i}", "text": "a prompt", "seed": 1}) for i in range(3)]
    with pytest.raises(InputSchemaError) as info:
        validate_rows(rows, source="gs://b/in.jsonl")
    message = str(info.value)
    assert "gs://b/in.jsonl has no 'prompt' column" in message
    assert "'id', 'text', 'seed'" in message
    assert "did you mean 'text'" in message and "Rename" in message
    assert info.value.report is not None
    assert any(e["type"] == "expect_column_to_exist" and not e["success"] for e in info.value.report["expectations"])


def test_schema_drift_id_missing_everywhere() -> None:
    rows = [RawRow(i, {"item_id": f"r{i}", "prompt": "x"}) for i in range(3)]
    with pytest.raises(InputSchemaError, match=r"no 'id' column.*'item_id', 'prompt'.*did you mean 'item_id'"):
        validate_rows(rows)


def test_nothing_parseable_stops_the_run() -> None:
    with pytest.raises(InputSchemaError, match=r"no row of in.jsonl could be read \(2 rows.*broken JSON"):
        validate_rows(iter_input_rows(b"{oops\nnot json\n", "jsonl"), source="in.jsonl")


def test_reject_flood_stops_the_run() -> None:
    rows = [RawRow(0, {"id": "ok", "prompt": "x"})]
    rows += [RawRow(i, {"id": f"r{i}", "prompt": "{{ x }}"}) for i in range(1, 4)]
    rows += [RawRow(4, {"id": "a/b", "prompt": "x"})]
    with pytest.raises(InputSchemaError) as info:
        validate_rows(rows, max_reject_fraction=0.5)
    message = str(info.value)
    assert "4 of 5 rows" in message and "80.0%" in message and "max_reject_fraction=0.5" in message
    assert "prompt_template_markers=3, id_unsafe=1" in message
    assert info.value.outcome is not None and len(info.value.outcome.rejects) == 4
    assert len(validate_rows(rows, max_reject_fraction=0.8).rejects) == 4  # at the limit is fine


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_reject_fraction"):
        validate_rows([], max_reject_fraction=1.5)
    with pytest.raises(ValueError, match="max_prompt_chars"):
        validate_rows([], max_prompt_chars=0)
    with pytest.raises(ValueError, match=r"\['lora'\] have no field in GenerationSpec"):
        validate_rows([], allowed_param_keys={"lora", "top_p"})  # an allowed key must have a bound


# --- other formats, end to end ----------------------------------------------------------------


def test_csv_input_end_to_end() -> None:
    data = (
        b"id,prompt,seed,params,notes\r\n"
        b'c1,"a chair, red",42,"{""temperature"": 0.2}",hello\r\n'
        b"c2,a table,-1,,\r\n"
        b"c3,a lamp,1.5,,\r\n"
        b"c4,a rug,,,\r\n"
        b"c5,,7,,\r\n"
    )
    outcome = validate_rows(iter_input_rows(data, "csv"))
    accepted = dict(outcome.accepted)
    assert accepted[0] == {"id": "c1", "prompt": "a chair, red", "seed": 42, "params": {"temperature": 0.2}, "notes": "hello"}
    assert accepted[3] == {"id": "c4", "prompt": "a rug"}
    assert [(r.index, r.rule) for r in outcome.rejects] == [(1, "seed_invalid"), (2, "seed_invalid"), (4, "prompt_missing")]


def test_parquet_input_end_to_end() -> None:
    table = pa.table(
        {
            "id": ["q1", "q/2", "q3"],
            "prompt": ["a", "b", "c"],
            "seed": pa.array([1, 2, 2**63], pa.uint64()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    outcome = validate_rows(iter_input_rows(buf.getvalue(), "parquet"))
    assert [i for i, _row in outcome.accepted] == [0]
    assert [(r.index, r.rule) for r in outcome.rejects] == [(1, "id_unsafe"), (2, "seed_invalid")]


# --- scale --------------------------------------------------------------------------------------


def _many(n: int) -> Iterator[RawRow]:
    for i in range(n):
        row: dict[str, Any] = {"id": f"item-{i}", "prompt": "describe a chair " * (1 + i % 40), "seed": i}
        if i % 100 == 0:
            row["prompt"] = "{{ x }}"
        yield RawRow(i, row)


def test_ten_thousand_rows_validate_quickly() -> None:
    validate_rows(_many(10))  # warm GX up: its import is slow, and only paid once
    start = time.perf_counter()
    outcome = validate_rows(_many(10_000))
    elapsed = time.perf_counter() - start
    assert len(outcome.accepted) == 9_900 and len(outcome.rejects) == 100
    assert elapsed < 10, f"validating 10k rows took {elapsed:.1f} s"


def test_validation_writes_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    validate_rows([RawRow(0, {"id": "a", "prompt": "x"})])
    assert list(tmp_path.iterdir()) == []


def test_reject_to_json_is_json_safe() -> None:
    reject = Reject(3, "x", "seed_invalid", "reason", {"id": "x", "when": object(), "n": [1, (2, 3)]})
    record = reject.to_json()
    json.dumps(record)
    assert record["row_index"] == 3 and record["row"]["n"] == [1, [2, 3]]
