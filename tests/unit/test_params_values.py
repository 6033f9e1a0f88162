"""Per-row ``params`` values obey the bounds of the run spec's ``generation`` fields (rule ``params_value_invalid``).

Rows go through the real readers and the real GX suite; the bounds under test are read from
``GenerationSpec.model_fields``, so a spec change that the input contract missed fails here.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import annotated_types as at
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import Field

from beam_jobs.raw_input import RowRules, judged_lines, read_jsonl
from genbatch.io.input_rows import iter_input_rows
from genbatch.quality.expectations import DEFAULT_PARAM_KEYS, RULES, Reject, ValidationOutcome, validate_rows
from genbatch.quality.param_bounds import param_bound, param_bounds
from genbatch.run.spec import GenerationSpec

RULE = "params_value_invalid"

# (label, the params object as JSON text, the bad key, what the reason must show for the value)
BAD: list[tuple[str, str, str, str]] = [
    ("temperature word", '{"temperature": "hot"}', "temperature", "a string 'hot'"),
    ("temperature negative", '{"temperature": -1}', "temperature", "is -1,"),
    ("temperature over", '{"temperature": 5.5}', "temperature", "is 5.5,"),
    ("temperature NaN", '{"temperature": NaN}', "temperature", "is NaN,"),
    ("temperature Infinity", '{"temperature": Infinity}', "temperature", "is Infinity,"),
    ("temperature -Infinity", '{"temperature": -Infinity}', "temperature", "is -Infinity,"),
    ("temperature 1e400", '{"temperature": 1e400}', "temperature", "is Infinity,"),
    ("temperature numeric string", '{"temperature": "0.7"}', "temperature", "a string '0.7'"),
    ("temperature boolean", '{"temperature": true}', "temperature", "a boolean True"),
    ("temperature null", '{"temperature": null}', "temperature", "is null,"),
    ("top_p over", '{"top_p": 5}', "top_p", "is 5,"),
    ("top_p zero", '{"top_p": 0}', "top_p", "is 0,"),
    ("max_new_tokens word", '{"max_new_tokens": "lots"}', "max_new_tokens", "a string 'lots'"),
    ("max_new_tokens digits", '{"max_new_tokens": "5"}', "max_new_tokens", "a string '5'"),
    ("max_new_tokens boolean", '{"max_new_tokens": true}', "max_new_tokens", "a boolean True"),
    ("max_new_tokens float", '{"max_new_tokens": 5.0}', "max_new_tokens", "is 5.0,"),
    ("max_new_tokens zero", '{"max_new_tokens": 0}', "max_new_tokens", "is 0,"),
    ("max_new_tokens huge", '{"max_new_tokens": 100000000000000000000000}', "max_new_tokens", "is 1000"),
    ("num_inference_steps over", '{"num_inference_steps": 201}', "num_inference_steps", "is 201,"),
    ("guidance_scale negative", '{"guidance_scale": -0.5}', "guidance_scale", "is -0.5,"),
    ("guidance_scale list", '{"guidance_scale": [1]}', "guidance_scale", "an array [1]"),
    ("height not a multiple of 8", '{"height": 12}', "height", "is 12,"),
    ("width too small", '{"width": 0}', "width", "is 0,"),
    ("good key, then a bad one", '{"top_p": 0.9, "width": "wide"}', "width", "a string 'wide'"),
]


def _line(ident: str, params_json: str) -> bytes:
    return f'{{"id": "{ident}", "prompt": "a red chair", "params": {params_json}}}'.encode()


@pytest.fixture(scope="module")
def bad_outcome() -> ValidationOutcome:
    lines = [_line(f"bad-{n}", params) for n, (_label, params, _key, _shown) in enumerate(BAD)]
    return validate_rows(iter_input_rows(b"\n".join(lines), "jsonl"))


def _reject_of(outcome: ValidationOutcome, index: int) -> Reject:
    (reject,) = [r for r in outcome.rejects if r.index == index]
    return reject


def test_every_bad_value_is_one_reject_for_the_new_rule(bad_outcome: ValidationOutcome) -> None:
    assert bad_outcome.accepted == []
    assert sorted(r.index for r in bad_outcome.rejects) == list(range(len(BAD)))
    assert {r.rule for r in bad_outcome.rejects} == {RULE}
    assert bad_outcome.report["rejects_by_rule"] == {RULE: len(BAD)}


@pytest.mark.parametrize(("index", "label"), [(i, case[0]) for i, case in enumerate(BAD)])
def test_reason_names_key_value_bounds_and_fix(bad_outcome: ValidationOutcome, index: int, label: str) -> None:
    _label, _params, key, shown = BAD[index]
    reason = _reject_of(bad_outcome, index).reason
    assert reason.startswith(f"params.{key} "), reason
    assert shown in reason, f"{label}: {reason}"
    assert f"must be {param_bound(key).expected}" in reason, reason
    assert f"drop the key to use the run's generation.{key}" in reason, reason


def test_the_verdict_comes_from_the_gx_suite(bad_outcome: ValidationOutcome) -> None:
    (entry,) = [e for e in bad_outcome.report["expectations"] if e["rule"] == RULE]
    assert entry["batch"] == "param_keys" and entry["type"] == "expect_column_values_to_be_null"
    assert entry["kwargs"] == {"column": "value_problem"}
    assert entry["success"] is False and entry["unexpected_count"] == len(BAD)  # one bad value per row
    assert RULES.index("params_key_not_allowed") < RULES.index(RULE) < RULES.index("negative_prompt_not_string")


def test_reject_records_are_strict_json(bad_outcome: ValidationOutcome) -> None:
    nan_row = next(i for i, case in enumerate(BAD) if case[0] == "temperature NaN")
    record = _reject_of(bad_outcome, nan_row).to_json()
    assert record["row"]["params"] == {"temperature": "NaN"}  # strict parsers refuse a bare NaN
    for reject in bad_outcome.rejects:
        json.dumps(reject.to_json(), allow_nan=False)


def test_several_bad_values_are_one_reject_naming_them_all() -> None:
    outcome = validate_rows(iter_input_rows(_line("many", '{"top_p": 2, "temperature": 1, "height": 7}'), "jsonl"))
    (reject,) = outcome.rejects
    assert reject.rule == RULE
    assert reject.reason.startswith("params.top_p is 2, must be a number within (0, 1];")
    assert reject.reason.endswith("(also out of bounds: height)")


def test_a_bad_key_wins_over_a_bad_value() -> None:
    outcome = validate_rows(iter_input_rows(_line("k", '{"lora": 1, "temperature": -1}'), "jsonl"))
    assert [r.rule for r in outcome.rejects] == ["params_key_not_allowed"]


# --- good values, and the bounds are the spec's -----------------------------------------------------------------


def _edges(key: str) -> list[tuple[Any, bool]]:
    """(value, allowed?) at and just past every bound the spec field declares."""
    field = GenerationSpec.model_fields[key]
    step: float = 1 if field.annotation is int else 1e-6
    multiple = next((m.multiple_of for m in field.metadata if isinstance(m, at.MultipleOf)), None)
    if multiple is not None:
        step = multiple
    edges: list[tuple[Any, bool]] = []
    for item in field.metadata:
        if isinstance(item, at.Ge):
            edges += [(item.ge, True), (item.ge - step, False)]
        elif isinstance(item, at.Gt):
            edges += [(item.gt, False), (item.gt + step, True)]
        elif isinstance(item, at.Le):
            edges += [(item.le, True), (item.le + step, False)]
        elif isinstance(item, at.Lt):
            edges += [(item.lt - step, True), (item.lt, False)]
    if multiple is not None:
        low = next(m.ge for m in field.metadata if isinstance(m, at.Ge))
        edges.append((low + 1, False))
    return edges


EDGES = [(key, value, ok) for key in sorted(DEFAULT_PARAM_KEYS) for value, ok in _edges(key)]


def test_every_allowed_key_is_a_bounded_spec_field() -> None:
    assert DEFAULT_PARAM_KEYS <= set(GenerationSpec.model_fields)
    for key in DEFAULT_PARAM_KEYS:
        assert len(_edges(key)) >= 2, f"{key} has no bound in the spec"
    # The checks are built from field constraints only: a validator on the model would not reach them.
    decorators = GenerationSpec.__pydantic_decorators__
    assert not decorators.field_validators and not decorators.model_validators


def test_values_at_and_past_the_spec_bounds_get_the_spec_verdict() -> None:
    lines = [_line(f"e{n}", json.dumps({key: value})) for n, (key, value, _ok) in enumerate(EDGES)]
    outcome = validate_rows(iter_input_rows(b"\n".join(lines), "jsonl"))
    verdicts = {i: True for i, _row in outcome.accepted} | {r.index: r.rule for r in outcome.rejects}
    for n, (key, value, ok) in enumerate(EDGES):
        spec_ok = _spec_accepts(key, value)
        assert spec_ok == ok, f"the test's edge {key}={value} is wrong"
        assert verdicts[n] == (True if ok else RULE), f"{key}={value}: {verdicts[n]}"


def _spec_accepts(key: str, value: Any) -> bool:
    try:
        GenerationSpec.model_validate({key: value})
    except ValueError:
        return False
    return True


def test_good_values_pass_unchanged() -> None:
    params = {"max_new_tokens": 4096, "temperature": 5, "top_p": 1.0, "num_inference_steps": 1,
              "guidance_scale": 0.0, "height": 4096, "width": 8}
    outcome = validate_rows(iter_input_rows(_line("ok", json.dumps(params)), "jsonl"))
    assert outcome.rejects == [] and outcome.accepted[0][1]["params"] == params
    assert outcome.report["settings"]["param_bounds"]["temperature"] == "a number within [0, 5]"


class _TighterGeneration(GenerationSpec):
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    height: int = Field(64, ge=16, le=512, multiple_of=16)


def test_a_changed_spec_bound_changes_the_verdict() -> None:
    assert param_bound("temperature").problem(2.0) is None
    assert param_bound("temperature", _TighterGeneration).problem(2.0) == "must be a number within [0, 1]"
    assert param_bound("height").problem(8) is None
    tight = param_bounds({"height"}, _TighterGeneration)["height"]
    assert tight.problem(8) == "must be an integer within [16, 512] and a multiple of 16"
    assert tight.problem(24) is not None and tight.problem(32) is None


def test_descriptions_follow_the_spec() -> None:
    assert param_bound("top_p").expected == "a number within (0, 1]"
    assert param_bound("max_new_tokens").expected == "an integer within [1, 4096]"
    assert param_bound("seed").expected == f"an integer within [0, {2**63})"
    assert param_bound("batch_size").expected == "an integer or 'auto'"


# --- other readers: the value reaches the rule ------------------------------------------------------------------


def test_csv_params_cell_with_nan_is_rejected() -> None:
    data = b'id,prompt,params\r\nc1,a chair,"{""temperature"": NaN}"\r\nc2,a lamp,"{""top_p"": 0.5}"\r\n'
    outcome = validate_rows(iter_input_rows(data, "csv"))
    assert [i for i, _row in outcome.accepted] == [1]
    assert [(r.index, r.rule) for r in outcome.rejects] == [(0, RULE)]
    assert "params.temperature is NaN" in outcome.rejects[0].reason


def test_parquet_struct_params_with_nan_and_inf_are_rejected() -> None:
    table = pa.table({"id": ["q1", "q2", "q3"], "prompt": ["a", "b", "c"],
                      "params": [{"temperature": math.nan}, {"temperature": math.inf}, {"temperature": 0.5}]})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    outcome = validate_rows(iter_input_rows(buf.getvalue(), "parquet"))
    assert [i for i, _row in outcome.accepted] == [2]
    assert [(r.index, r.rule) for r in outcome.rejects] == [(0, RULE), (1, RULE)]


def test_beam_raw_input_judges_nan_params_and_writes_strict_json() -> None:
    data = b"\n".join([_line("r0", '{"temperature": NaN}'), _line("r1", '{"temperature": 0.2}'),
                       _line("r2", '{"top_p": Infinity}')]) + b"\n"
    lines = list(judged_lines(read_jsonl(io.BytesIO(data), "in.jsonl"), RowRules(max_prompt_chars=4000), "in.jsonl"))
    assert [rule for _line_, rule in lines] == [RULE, None, RULE]
    for line, _rule in lines:
        json.dumps(line, allow_nan=False)  # the ingest temp objects and rejects stay strict JSON
    assert "params.top_p is Infinity, must be a number within (0, 1]" in lines[2][0]["reject"]["reason"]
