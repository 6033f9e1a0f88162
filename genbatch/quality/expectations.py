"""The input contract (DESIGN §3) as a Great Expectations suite, and the row verdicts it yields.

Each row is summarised in Python into plain check columns and the rules are GX expectations on those
columns: every verdict comes from the GX result. Each bad row ends as exactly one :class:`Reject`, for the
first rule it breaks in :data:`RULES` order; every row ends either accepted or rejected. Uniqueness of ``id``
is not checked here (the Beam preprocessing stage dedupes). Table-level failures raise
:class:`InputSchemaError`, which stops the run.

Why GX and a derived frame, and the table-level failures: docs/internals.md#genbatchqualityexpectations
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from genbatch.errors import GenbatchError, ShardInputError
from genbatch.io.input_rows import RawRow, find_unencodable
from genbatch.io.show import show as _show
from genbatch.quality.param_bounds import ParamBound, param_bounds
from genbatch.run.row_shape import SHAPE_RULES, RowShape, shape_rows

__all__ = [
    "DEFAULT_PARAM_KEYS",
    "ID_PATTERN",
    "RULES",
    "InputSchemaError",
    "Reject",
    "ValidationOutcome",
    "data_docs_html",
    "gx_validate",
    "validate_rows",
]

RULES: tuple[str, ...] = (
    "parse_error",
    *SHAPE_RULES,
    "id_missing",
    "id_not_string",
    "id_unsafe",
    "prompt_missing",
    "prompt_not_string",
    "prompt_empty",
    "prompt_too_long",
    "prompt_control_chars",
    "prompt_template_markers",
    "seed_invalid",
    "params_not_object",
    "params_key_not_allowed",
    "params_value_invalid",
    "negative_prompt_not_string",
)
"""Row rules in the order they are applied: a row is rejected for the first one it breaks."""

DEFAULT_PARAM_KEYS: frozenset[str] = frozenset(
    {
        "max_new_tokens",
        "temperature",
        "top_p",
        "num_inference_steps",
        "guidance_scale",
        "height",
        "width",
    }
)
"""Per-item ``params`` overrides allowed unless the run spec says otherwise; each value must obey the
bounds of the ``generation`` field of the same name (:mod:`genbatch.quality.param_bounds`)."""

ID_MAX_CHARS = 128
ID_PATTERN = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z"
"""Ids become object names: no ``/``, no ``..``, no spaces or control/bidi characters, ≤128 chars.
``\\Z`` rather than ``$`` so a trailing newline cannot slip through."""

# C0 controls except \t and \n, DEL, a CR not followed by LF (CRLF survives in CSV cells written
# on Windows), and the bidi embedding/override/isolate characters that can hide text.
CONTROL_PATTERN = (
    "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f\\u202a-\\u202e\\u2066-\\u2069]|\\r(?!\\n)"
)
TEMPLATE_PATTERN = r"\{\{|\{%|\{#|\}\}|%\}|#\}"
"""Jinja delimiters: a prompt that reaches a templated field must not render as code."""
NOT_BLANK_PATTERN = r"\S"
SEED_MAX_BITS = 63  # 0 <= seed < 2**63: fits a signed 64-bit integer everywhere downstream

SUITE_NAME = "genbatch.input"
_ABSENT = "absent"
_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
_TABLE_RULES = ("table_row_count", "id_column", "prompt_column")
_PROMPT_LIKE_COLUMNS = ("text", "input", "prompt_text", "query", "instruction", "caption", "Prompt")
_ID_LIKE_COLUMNS = ("ID", "Id", "item_id", "key", "uid", "uuid", "name")
_CONTROL_RE = re.compile(CONTROL_PATTERN)
_TEMPLATE_RE = re.compile(TEMPLATE_PATTERN)
_ID_CHAR_RE = re.compile(r"[A-Za-z0-9._:-]")
_GX_LOCK = threading.Lock()


class InputSchemaError(ShardInputError):
    """The input as a whole breaks the contract (no rows, a missing column, too many rejects)."""

    def __init__(
        self,
        message: str,
        *,
        report: dict[str, Any] | None = None,
        outcome: ValidationOutcome | None = None,
    ) -> None:
        super().__init__(message)
        self.report = report
        self.outcome = outcome


@dataclass(frozen=True)
class Reject:
    """A row that broke a rule. ``id`` is untrusted input: never use it as a path."""

    index: int
    id: str | None
    rule: str
    reason: str
    row: dict[str, Any] | None
    source: dict[str, Any] | None = None  # {"file", "line"}: where the row is in the user's input

    def to_json(self) -> dict[str, Any]:
        """The ``rejects/part-*.jsonl`` record: ``{id, reason, rule, row, row_index, source}``, JSON-safe.

        ``row_index`` is the name consumers read in every record file (shard items, outputs, errors).
        """
        return {
            "id": self.id,
            "reason": self.reason,
            "rule": self.rule,
            "row": _jsonable(self.row),
            "row_index": self.index,
            **({"source": self.source} if self.source is not None else {}),
        }


@dataclass
class ValidationOutcome:
    """Accepted rows as ``(index, row)``, one :class:`Reject` per bad row, and the GX report."""

    accepted: list[tuple[int, dict[str, Any]]]
    rejects: list[Reject]
    report: dict[str, Any] = field(default_factory=dict)
    sources: dict[int, dict[str, Any]] = field(default_factory=dict)  # accepted row index -> {"file", "line"}
    gx_results: list[Any] = field(default_factory=list, repr=False, compare=False)
    """The raw GX validation results (rows, then params keys), for Data Docs."""


def validate_rows(
    rows: Iterable[RawRow],
    *,
    max_prompt_chars: int = 4000,
    allowed_param_keys: Collection[str] = DEFAULT_PARAM_KEYS,
    max_reject_fraction: float = 1.0,
    source: str = "input",
    min_rows: int = 1,
    max_rows: int | None = None,
    shape: RowShape | None = None,
) -> ValidationOutcome:
    """Validate input rows against the contract with GX; raise InputSchemaError on table failures.

    ``source`` only names the input in messages (a path or URI). ``min_rows``/``max_rows`` bound
    the number of input rows (blank lines excluded); outside them the run stops. Every allowed
    params key must be a ``generation`` field of the run spec: its values are checked against it.
    ``shape`` (template, OpenAI Batch lines, chat) turns each row into the contract's shape first
    (:mod:`genbatch.run.row_shape`); accepted rows are the shaped ones.
    """
    if min_rows < 1 or (max_rows is not None and max_rows < min_rows):
        raise ValueError(f"row bounds must satisfy 1 <= min_rows <= max_rows, got {min_rows}, {max_rows}")
    if max_prompt_chars < 1:
        raise ValueError(f"max_prompt_chars must be >= 1, got {max_prompt_chars}")
    if not 0.0 <= max_reject_fraction <= 1.0:
        raise ValueError(f"max_reject_fraction must be within [0, 1], got {max_reject_fraction}")
    allowed = frozenset(allowed_param_keys)
    bounds = param_bounds(allowed)

    # 1. Shape and normalise: rows a caller built by hand may still hold lone surrogates or non-dicts.
    shape = shape or RowShape()
    items = [_normalise(raw) for raw in shape_rows(rows, shape)]

    # 2. Summarise every row into check columns, and every params key into its own row.
    frame, key_frame, columns_found = _derive_frames(items, bounds, shaped=shape.active)

    # 3. Run the suites; the GX results are the verdicts.
    row_suite = _row_suite(frame.columns, max_prompt_chars, min_rows, max_rows)
    key_suite = _key_suite(allowed)
    with _GX_LOCK:
        gx_env = _gx_env()
        row_result = gx_env.rows.get_batch(batch_parameters={"dataframe": frame}).validate(
            row_suite, result_format=_RESULT_FORMAT
        )
        key_result = gx_env.keys.get_batch(batch_parameters={"dataframe": key_frame}).validate(
            key_suite, result_format=_RESULT_FORMAT
        )
    expectations = _summarise(row_result, "rows") + _summarise(key_result, "param_keys")
    failed: dict[str, set[int]] = {rule: set() for rule in RULES}
    table_ok: dict[str, bool] = {}
    results = _results(row_result) + _results(key_result)
    for entry, result in zip(expectations, results, strict=True):
        rule = entry["rule"]
        if entry["exception"]:
            raise GenbatchError(
                f"GX expectation {entry['type']} for rule {rule} could not run: "
                f"{entry['exception']}; this is a genbatch bug, report it with the input"
            )
        if rule in _TABLE_RULES:
            table_ok[rule] = bool(entry["success"])
            continue
        positions = [int(i) for i in result.result.get("unexpected_index_list") or []]
        if entry["batch"] == "param_keys":
            positions = [int(key_frame["row"].iat[i]) for i in positions]
        failed[rule].update(positions)

    # 4. One verdict per row: the first rule (in RULES order) whose expectation flagged it.
    verdict: dict[int, str] = {}
    for rule in RULES:
        for position in failed[rule]:
            verdict.setdefault(position, rule)
    accepted: list[tuple[int, dict[str, Any]]] = []
    sources: dict[int, dict[str, Any]] = {}
    rejects: list[Reject] = []
    for position, (raw, row, error) in enumerate(items):
        rule_name = verdict.get(position)
        where = raw.provenance()
        if rule_name is None and row is not None:
            accepted.append((raw.index, row))
            if where is not None:
                sources[raw.index] = where
        else:
            rule_name = rule_name or "parse_error"  # unreachable: GX flags every unparsed row
            if rule_name in SHAPE_RULES and raw.shape_problem is not None:
                reason = raw.shape_problem[1]
            else:
                reason = _reason(rule_name, row, error, max_prompt_chars, bounds)
            rejects.append(Reject(raw.index, _row_id(row), rule_name, reason, row, where))

    report = _report(
        row_result, key_result, expectations, items, accepted, rejects,
        columns_found, max_prompt_chars, bounds, max_reject_fraction, min_rows, max_rows,
    )
    outcome = ValidationOutcome(
        accepted=accepted, rejects=rejects, report=report, gx_results=[row_result, key_result], sources=sources
    )
    _raise_on_table_failures(table_ok, outcome, columns_found, source, max_reject_fraction)
    return outcome


# --- step 1: normalise ------------------------------------------------------------------------


def _normalise(raw: RawRow) -> tuple[RawRow, dict[str, Any] | None, str | None]:
    """Return (raw, row or None, parse error or None) with hand-built bad rows made parse errors."""
    if raw.parse_error is not None:
        return raw, None, raw.parse_error
    if not isinstance(raw.row, dict):
        return raw, None, f"row is {type(raw.row).__name__}, not an object"
    where = find_unencodable(raw.row)
    if where is not None:
        return raw, None, f"{where}; it cannot be written as UTF-8"
    return raw, raw.row, None


# --- step 2: derive the check frames ----------------------------------------------------------


def _type_tag(row: Mapping[str, Any], key: str) -> str:
    """JSON-ish type of ``row[key]``; a missing key or null is ``absent`` (optional = not given)."""
    value = row.get(key)
    if value is None:
        return _ABSENT
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _key_problem(key: Any, value: Any, bounds: Mapping[str, ParamBound]) -> str | None:
    """The violation of an allowed key's value (``must be ...``), else None (a key not allowed is
    ``params_key_not_allowed``'s business)."""
    bound = bounds.get(key) if isinstance(key, str) else None
    return bound.problem(value) if bound is not None else None


def _derive_frames(
    items: list[tuple[RawRow, dict[str, Any] | None, str | None]],
    bounds: Mapping[str, ParamBound],
    *,
    shaped: bool = False,
) -> tuple[Any, Any, list[str]]:
    """Build the per-row check frame, the per-params-key frame (key and value violation), and the
    input's column names. ``shaped``: a shape makes ``id`` and ``prompt`` (the input need not have them)."""
    import pandas as pd

    cols: dict[str, list[Any]] = {
        name: []
        for name in (
            "parse_status", "shape_rule", "id_type", "id", "prompt_type", "prompt", "seed_type", "seed",
            "seed_bit_length", "params_type", "negative_prompt_type",
        )
    }
    key_rows: list[int] = []
    key_names: list[str] = []
    key_problems: list[str | None] = []
    seen: dict[str, None] = dict.fromkeys(("id", "prompt")) if shaped else {}
    for position, (raw, row, _error) in enumerate(items):
        if row is None:
            cols["parse_status"].append("error")
            for name in cols:
                if name != "parse_status":
                    cols[name].append(None)
            continue
        for key in row:
            seen.setdefault(str(key), None)
        cols["parse_status"].append("ok")
        cols["shape_rule"].append(raw.shape_problem[0] if raw.shape_problem is not None else "ok")
        ident, prompt, seed, params = (row.get(k) for k in ("id", "prompt", "seed", "params"))
        cols["id_type"].append(_type_tag(row, "id"))
        cols["id"].append(ident if isinstance(ident, str) else None)
        cols["prompt_type"].append(_type_tag(row, "prompt"))
        cols["prompt"].append(prompt if isinstance(prompt, str) else None)
        seed_type = _type_tag(row, "seed")
        cols["seed_type"].append(seed_type)
        if seed_type == "integer" and isinstance(seed, int):
            in_int64 = -(2**63) <= seed < 2**63
            cols["seed"].append(seed if in_int64 else None)
            cols["seed_bit_length"].append(abs(seed).bit_length())
        else:
            cols["seed"].append(None)
            cols["seed_bit_length"].append(None)
        cols["params_type"].append(_type_tag(row, "params"))
        cols["negative_prompt_type"].append(_type_tag(row, "negative_prompt"))
        if isinstance(params, Mapping):
            for key in params:
                key_rows.append(position)
                key_names.append(key if isinstance(key, str) else repr(key))
                key_problems.append(_key_problem(key, params[key], bounds))

    data: dict[str, Any] = {}
    for name, values in cols.items():
        if name == "id" and "id" not in seen:
            continue  # schema drift: ExpectColumnToExist("id") must see the column is gone
        if name == "prompt" and "prompt" not in seen:
            continue
        dtype = "Int64" if name in ("seed", "seed_bit_length") else object
        data[name] = pd.Series(values, dtype=dtype)
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(items)))
    key_frame = pd.DataFrame(
        {
            "row": pd.Series(key_rows, dtype="int64"),
            "key": pd.Series(key_names, dtype=object),
            "value_problem": pd.Series(key_problems, dtype=object),
        }
    )
    return frame, key_frame, list(seen)


# --- step 3: the suites -----------------------------------------------------------------------


class _GxEnv:
    """The cached ephemeral GX context and its whole-dataframe batch definitions."""

    def __init__(self, gx: Any, context: Any, rows: Any, keys: Any, source: Any = None) -> None:
        self.gx = gx
        self.context = context
        self.rows = rows
        self.keys = keys
        self.source = source
        self.batches: dict[str, Any] = {}

    def batch_definition(self, asset: str) -> Any:
        """A whole-dataframe batch definition named ``asset``, added to the context on first use."""
        if asset not in self.batches:
            self.batches[asset] = self.source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe(
                f"all_{asset}"
            )
        return self.batches[asset]


def _import_gx() -> Any:
    """Import GX with analytics off; the import is slow (~2 s), so only validation pays it."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    return gx


@cache
def _gx_env() -> _GxEnv:
    """Build the ephemeral context once per process: nothing is written to disk, no network."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("genbatch_input")
    rows = source.add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all_rows")
    keys = source.add_dataframe_asset("param_keys").add_batch_definition_whole_dataframe(
        "all_param_keys"
    )
    return _GxEnv(gx, context, rows, keys, source)


def gx_validate(
    asset: str,
    frame: Any,
    suite_name: str,
    expectations: Callable[[Any], list[Any]],
    *,
    result_format: str | dict[str, Any] = "SUMMARY",
) -> Any:
    """Validate a pandas frame against a suite on the shared cached ephemeral context.

    ``expectations`` receives the ``great_expectations`` module and returns the expectations, so
    callers need not import GX themselves. Other suites (the quality gates) use this instead of a
    context of their own; ``asset`` names the frame (e.g. ``quality_items``).
    """
    gx = _import_gx()
    suite = gx.ExpectationSuite(name=suite_name, expectations=expectations(gx))
    with _GX_LOCK:
        env = _gx_env()
        batch = env.batch_definition(asset).get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(suite, result_format=result_format)


def data_docs_html(results: Iterable[Any]) -> str:
    """GX Data Docs: one HTML page with the validation result page of every result given.

    The page is GX's own renderer output (``ValidationResultsPageRenderer``); it loads Bootstrap
    and friends from CDNs, so offline it shows unstyled but complete tables.
    """
    _import_gx()
    import logging

    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    renderer, view = ValidationResultsPageRenderer(), DefaultJinjaPageView()
    pages = []
    gx_logger = logging.getLogger("great_expectations")
    level = gx_logger.level
    gx_logger.setLevel(logging.CRITICAL)  # GX logs a traceback for numpy scalars it cannot format
    try:
        for result in results:
            pages.append(view.render(renderer.render(_plain_numbers(result))))
    finally:
        gx_logger.setLevel(level)
    if len(pages) == 1:
        return str(pages[0])
    # Several results: keep the first page's <head>, append the others' bodies.
    first = str(pages[0])
    bodies = [p[p.find("<body"):p.rfind("</body>")] for p in map(str, pages[1:])]
    cut = first.rfind("</body>")
    return first[:cut] + "".join(f"<hr>{b[b.find('>') + 1:]}" for b in bodies) + first[cut:]


def _plain_numbers(result: Any) -> Any:
    """Turn numpy scalars in the observed values into Python numbers (GX's renderer wants them)."""
    for r in getattr(result, "results", []):
        details = r.result or {}
        value = details.get("observed_value")
        if value is not None and hasattr(value, "item") and not isinstance(value, (str, bytes)):
            try:
                details["observed_value"] = value.item()
            except (ValueError, TypeError):
                pass
    return result


def _row_suite(
    columns: Iterable[str], max_prompt_chars: int, min_rows: int = 1, max_rows: int | None = None
) -> Any:
    """The per-row suite; value checks on ``id``/``prompt`` only exist when those columns do."""
    gx = _import_gx()
    e = gx.expectations
    present = set(columns)

    def rule(name: str) -> dict[str, Any]:
        return {"meta": {"rule": name}}

    expectations: list[Any] = [
        e.ExpectTableRowCountToBeBetween(
            min_value=min_rows, max_value=max_rows, **rule("table_row_count")
        ),
        e.ExpectColumnToExist(column="id", **rule("id_column")),
        e.ExpectColumnToExist(column="prompt", **rule("prompt_column")),
        e.ExpectColumnValuesToBeInSet(
            column="parse_status", value_set=["ok"], **rule("parse_error")
        ),
        *(e.ExpectColumnValuesToNotBeInSet(column="shape_rule", value_set=[name], **rule(name))
          for name in SHAPE_RULES),
        e.ExpectColumnValuesToNotBeInSet(
            column="id_type", value_set=[_ABSENT], **rule("id_missing")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="id_type", value_set=["string", _ABSENT], **rule("id_not_string")
        ),
        e.ExpectColumnValuesToNotBeInSet(
            column="prompt_type", value_set=[_ABSENT], **rule("prompt_missing")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="prompt_type", value_set=["string", _ABSENT], **rule("prompt_not_string")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="seed_type", value_set=["integer", _ABSENT], **rule("seed_invalid")
        ),
        e.ExpectColumnValuesToBeBetween(column="seed", min_value=0, **rule("seed_invalid")),
        e.ExpectColumnValuesToBeBetween(
            column="seed_bit_length", max_value=SEED_MAX_BITS, **rule("seed_invalid")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="params_type", value_set=["object", _ABSENT], **rule("params_not_object")
        ),
        e.ExpectColumnValuesToBeInSet(
            column="negative_prompt_type",
            value_set=["string", _ABSENT],
            **rule("negative_prompt_not_string"),
        ),
    ]
    if "id" in present:
        expectations += [
            e.ExpectColumnValueLengthsToBeBetween(
                column="id", min_value=1, max_value=ID_MAX_CHARS, **rule("id_unsafe")
            ),
            e.ExpectColumnValuesToMatchRegex(column="id", regex=ID_PATTERN, **rule("id_unsafe")),
        ]
    if "prompt" in present:
        expectations += [
            e.ExpectColumnValuesToMatchRegex(
                column="prompt", regex=NOT_BLANK_PATTERN, **rule("prompt_empty")
            ),
            e.ExpectColumnValueLengthsToBeBetween(
                column="prompt", max_value=max_prompt_chars, **rule("prompt_too_long")
            ),
            e.ExpectColumnValuesToNotMatchRegex(
                column="prompt", regex=CONTROL_PATTERN, **rule("prompt_control_chars")
            ),
            e.ExpectColumnValuesToNotMatchRegex(
                column="prompt", regex=TEMPLATE_PATTERN, **rule("prompt_template_markers")
            ),
        ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def _key_suite(allowed: frozenset[str]) -> Any:
    """The per-params-key suite: the key is allowed, and its value has no violation of its spec bound."""
    gx = _import_gx()
    return gx.ExpectationSuite(
        name=f"{SUITE_NAME}.params",
        expectations=[
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="key",
                value_set=sorted(allowed),
                meta={"rule": "params_key_not_allowed"},
            ),
            gx.expectations.ExpectColumnValuesToBeNull(
                column="value_problem", meta={"rule": "params_value_invalid"}
            ),
        ],
    )


def _results(validation: Any) -> list[Any]:
    return list(validation.results)


def _summarise(validation: Any, batch: str) -> list[dict[str, Any]]:
    """One JSON-able line per expectation result: what GX checked and how it went."""
    lines: list[dict[str, Any]] = []
    for result in validation.results:
        config = result.expectation_config
        details = result.result or {}
        kwargs = {k: v for k, v in dict(config.kwargs).items() if k != "batch_id"}
        exception = (result.exception_info or {}).get("exception_message")
        if exception is None:  # GX nests metric errors one level down
            for info in (result.exception_info or {}).values():
                if isinstance(info, dict) and info.get("raised_exception"):
                    exception = info.get("exception_message")
                    break
        lines.append(
            {
                "batch": batch,
                "rule": (config.meta or {}).get("rule"),
                "type": config.type,
                "kwargs": _jsonable(kwargs),
                "success": bool(result.success),
                "element_count": details.get("element_count"),
                "unexpected_count": details.get("unexpected_count"),
                "observed_value": _jsonable(details.get("observed_value")),
                "exception": exception,
            }
        )
    return lines


# --- step 4: reasons --------------------------------------------------------------------------


def _char(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if not name:
        names = {"\x00": "NUL", "\r": "CARRIAGE RETURN", "\x7f": "DELETE"}
        name = names.get(ch, "control character")
    return f"U+{ord(ch):04X} ({name})"


def _row_id(row: Mapping[str, Any] | None) -> str | None:
    """The row's id; an OpenAI Batch line that could not be shaped is named by its ``custom_id``."""
    ident = row.get("id", row.get("custom_id")) if row is not None else None
    return ident if isinstance(ident, str) else None


def _type_name(value: Any) -> str:
    return {
        "boolean": "a boolean",
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "object": "an object",
        "array": "an array",
    }.get(_type_tag({"v": value}, "v"), type(value).__name__)


def _param_value(value: Any) -> str:
    """A params value as the reason shows it: numbers bare (null/NaN/Infinity as JSON spells them), the rest typed."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return json.dumps(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _show(value)
    return f"{_type_name(value)} {_show(value)}"


def _params_value_reason(params: Mapping[str, Any], bounds: Mapping[str, ParamBound]) -> str:
    """The first out-of-bounds value in full (key, value, allowed type and range, the fix); others by key."""
    bad = [(key, problem) for key, value in params.items() if (problem := _key_problem(key, value, bounds))]
    if not bad:
        return "params has a value outside its bounds"  # unreachable: GX flagged a key's violation
    key, problem = bad[0]
    also = f" (also out of bounds: {', '.join(k for k, _ in bad[1:])})" if len(bad) > 1 else ""
    return (
        f"params.{key} is {_param_value(params[key])}, {problem}; fix the value or drop the key "
        f"to use the run's generation.{key}{also}"
    )


def _id_problem(ident: str) -> str:
    if ident == "":
        return "is empty"
    if len(ident) > ID_MAX_CHARS:
        return f"is {len(ident)} characters long (max {ID_MAX_CHARS})"
    if "/" in ident or "\\" in ident:
        return "contains a path separator"
    if ".." in ident:
        return "contains '..'"
    if not _ID_CHAR_RE.fullmatch(ident[0]) or ident[0] in "._:-":
        return f"starts with {_char(ident[0])}, not a letter or digit"
    for position, ch in enumerate(ident):
        if not _ID_CHAR_RE.fullmatch(ch):
            return f"contains {_char(ch)} at position {position}"
    return "does not match the id pattern"


def _reason(  # one branch per rule reads best
    rule: str,
    row: Mapping[str, Any] | None,
    parse_error: str | None,
    max_prompt_chars: int,
    bounds: Mapping[str, ParamBound],
) -> str:
    """The human reason for a verdict GX gave: the field, the bad value, and what to do."""
    if rule == "parse_error" or row is None:
        return f"row could not be read: {parse_error}"
    ident, prompt = row.get("id"), row.get("prompt")
    if rule == "id_missing":
        return "id is missing or null; give every row a unique string 'id' (it names the outputs)"
    if rule == "id_not_string":
        return f"id must be a string, got {_type_name(ident)} {_show(ident)}; quote it in the input"
    if rule == "id_unsafe":
        return (
            f"id {_show(ident)} {_id_problem(str(ident))}; ids name output objects, so use 1-128 "
            "characters from A-Z a-z 0-9 . _ : - starting with a letter or digit, without '..'"
        )
    if rule == "prompt_missing":
        return "prompt is missing or null; give every row a non-empty string 'prompt'"
    if rule == "prompt_not_string":
        return f"prompt must be a string, got {_type_name(prompt)} {_show(prompt)}"
    if rule == "prompt_empty":
        return f"prompt {_show(prompt)} is empty or whitespace only; write a prompt or drop the row"
    if rule == "prompt_too_long":
        return (
            f"prompt is {len(str(prompt))} characters, over the limit of {max_prompt_chars} "
            f"(starts {_show(str(prompt)[:40])}); shorten it or raise max_prompt_chars"
        )
    if rule == "prompt_control_chars":
        match = _CONTROL_RE.search(str(prompt))
        where = f"{_char(match.group()[0])} at position {match.start()}" if match else "one"
        return (
            f"prompt contains control or bidi-override character {where} "
            f"({_show(str(prompt))}); remove it (only \\n, \\t and CRLF are allowed)"
        )
    if rule == "prompt_template_markers":
        match = _TEMPLATE_RE.search(str(prompt))
        where = f"{match.group()!r} at position {match.start()}" if match else "a marker"
        return (
            f"prompt contains template marker {where} ({_show(str(prompt))}); remove or reword "
            "it: prompts must not carry Jinja/template syntax"
        )
    if rule == "seed_invalid":
        seed = row.get("seed")
        return (
            f"seed must be an integer with 0 <= seed < 2**63, got {_type_name(seed)} "
            f"{_show(seed)}; fix it or leave seed out to derive it from the run seed and id"
        )
    if rule == "params_not_object":
        params = row.get("params")
        return (
            f"params must be an object of generation overrides, got {_type_name(params)} "
            f"{_show(params)}; write it like {{\"temperature\": 0.7}} or leave it out"
        )
    if rule == "params_key_not_allowed":
        params = row.get("params") or {}
        bad = sorted(str(k) for k in params if k not in bounds)
        return (
            f"params has key(s) not allowed per item: {_show(bad)}; allowed: "
            f"{', '.join(sorted(bounds))}; remove them or set them run-wide in the run spec"
        )
    if rule == "params_value_invalid":
        return _params_value_reason(row.get("params") or {}, bounds)
    if rule == "negative_prompt_not_string":
        negative = row.get("negative_prompt")
        return (
            f"negative_prompt must be a string, got {_type_name(negative)} {_show(negative)}; "
            "quote it or leave it out"
        )
    return f"row broke rule {rule}"


# --- the report and table-level failures ------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so the value can be written anywhere as strict JSON: odd types become
    strings, and so do NaN and infinities (``"NaN"``, ``"Infinity"``), which strict parsers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.loads(json.dumps(value, default=str), parse_constant=str)


def _report(
    row_result: Any,
    key_result: Any,
    expectations: list[dict[str, Any]],
    items: list[tuple[RawRow, dict[str, Any] | None, str | None]],
    accepted: list[tuple[int, dict[str, Any]]],
    rejects: list[Reject],
    columns_found: list[str],
    max_prompt_chars: int,
    bounds: Mapping[str, ParamBound],
    max_reject_fraction: float,
    min_rows: int = 1,
    max_rows: int | None = None,
) -> dict[str, Any]:
    gx = _import_gx()
    by_rule = Counter(r.rule for r in rejects)
    return {
        "suite": SUITE_NAME,
        "success": bool(row_result.success) and bool(key_result.success),
        "gx_version": gx.__version__,
        "row_count": len(items),
        "parsed_count": sum(1 for _raw, row, _err in items if row is not None),
        "accepted_count": len(accepted),
        "rejected_count": len(rejects),
        "rejects_by_rule": {rule: by_rule[rule] for rule in RULES if by_rule[rule]},
        "columns_found": columns_found[:50],
        "settings": {
            "max_prompt_chars": max_prompt_chars,
            "allowed_param_keys": sorted(bounds),
            "param_bounds": {key: bound.expected for key, bound in sorted(bounds.items())},
            "max_reject_fraction": max_reject_fraction,
            "min_rows": min_rows,
            "max_rows": max_rows,
        },
        "statistics": {
            "rows": _jsonable(dict(row_result.statistics)),
            "param_keys": _jsonable(dict(key_result.statistics)),
        },
        "expectations": expectations,
    }


def _did_you_mean(columns: list[str], candidates: tuple[str, ...]) -> str:
    found = [c for c in candidates if c in columns]
    return f" (did you mean {found[0]!r}?)" if found else ""


def _raise_on_table_failures(
    table_ok: Mapping[str, bool],
    outcome: ValidationOutcome,
    columns_found: list[str],
    source: str,
    max_reject_fraction: float,
) -> None:
    """Stop the run on what no per-row reject can express; the message says what to fix."""
    report = outcome.report
    total = report["row_count"]
    if not table_ok.get("table_row_count", False):
        if total == 0:
            message = (f"input has no rows: {source} is empty or holds only blank lines; check "
                       "the input path and the export that wrote it")
        else:
            bounds = report["settings"]
            message = (f"input {source} has {total} rows, outside the expected "
                       f"{bounds['min_rows']}..{bounds['max_rows'] or 'unbounded'}; check the export "
                       "(a truncated or doubled file?) or change the row bounds in the run spec")
        raise InputSchemaError(message, report=report, outcome=outcome)
    if report["parsed_count"] == 0:
        first = outcome.rejects[0]
        raise InputSchemaError(
            f"no row of {source} could be read ({total} rows, all parse errors; first, row "
            f"{first.index}: {first.reason}); check the format (JSONL, CSV with a header, "
            "Parquet) and that the file is UTF-8",
            report=report,
            outcome=outcome,
        )
    shown = ", ".join(repr(c) for c in columns_found[:20]) or "none"
    for column, candidates in (("id", _ID_LIKE_COLUMNS), ("prompt", _PROMPT_LIKE_COLUMNS)):
        if not table_ok.get(f"{column}_column", False):
            raise InputSchemaError(
                f"input {source} has no {column!r} column: none of its {total} rows has the key; "
                f"columns found: {shown}. Rename the column that holds the {column} to "
                f"{column!r}{_did_you_mean(columns_found, candidates)} and rerun",
                report=report,
                outcome=outcome,
            )
    rejected = report["rejected_count"]
    if total and rejected / total > max_reject_fraction:
        counts = Counter(r.rule for r in outcome.rejects)
        top = ", ".join(f"{rule}={count}" for rule, count in counts.most_common(3))
        raise InputSchemaError(
            f"{rejected} of {total} rows of {source} were rejected ({rejected / total:.1%}), over "
            f"max_reject_fraction={max_reject_fraction}; top rules: {top}. Fix the input (see "
            "the rejects) or raise max_reject_fraction in the run spec",
            report=report,
            outcome=outcome,
        )
