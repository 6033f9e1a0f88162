"""Quality gates: ``metric op threshold`` expressions from the spec, checked as a GX suite.

The catalogue :data:`METRICS` names every aggregate a gate may use and how it is computed from the
per-item metrics table (a column mean, sum, min or max) or from the run's counts. Each gate becomes
one Great Expectations expectation (``ExpectColumnMeanToBeBetween``, ``...SumToBeBetween``, ...)
on that table; the verdict is GX's. Python only picks up to five example ids for a failed gate.

This module imports only the standard library at load time: the spec imports it to validate gate
expressions, and DAG files import the spec.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TEXT, IMAGE = "text", "image"
BOTH = frozenset({TEXT, IMAGE})
EXAMPLES_PER_GATE = 5
SUITE_NAME = "genbatch.quality"


@dataclass(frozen=True)
class Metric:
    """One aggregate: ``agg`` of the per-item ``column`` (or a run-level figure when agg is 'run')."""

    name: str
    agg: str  # "mean" | "sum" | "min" | "max" | "run"
    column: str
    tasks: frozenset[str]
    higher_is_worse: bool
    doc: str


METRICS: dict[str, Metric] = {m.name: m for m in [
    Metric("success_rate", "run", "success_rate", BOTH, False, "generated / accepted"),
    Metric("reject_rate", "run", "reject_rate", BOTH, True, "rejected / input"),
    Metric("error_rate", "run", "error_rate", BOTH, True, "errored / accepted"),
    Metric("nonempty_rate", "mean", "nonempty", BOTH, False, "share of outputs that are not empty (text) / not blank (image)"),
    Metric("empty_rate", "mean", "empty", BOTH, True, "share of empty or whitespace-only texts; black, uniform or NaN images"),
    Metric("duplicate_output_rate", "mean", "duplicate", BOTH, True,
           "share of outputs identical to an earlier one (images: near-duplicates by perceptual hash)"),
    Metric("adherence", "mean", "adherent", BOTH, False,
           "share of checkable items that honour the prompt (text: attributes, expect_keywords, "
           "expect_patterns; image: the adherence hook, by default dominant colour = prompt colour)"),
    Metric("mean_new_tokens", "mean", "new_tokens", frozenset({TEXT}), False, "mean generated tokens"),
    Metric("min_new_tokens", "min", "new_tokens", frozenset({TEXT}), False, "fewest generated tokens"),
    Metric("truncation_rate", "mean", "truncated", frozenset({TEXT}), True, "share that hit max_new_tokens"),
    Metric("repetition_rate", "mean", "repetition_loop", frozenset({TEXT}), True,
           "share with a repeated n-gram loop (a span of 1-8 words 3+ times in a row, or a 10+ char run)"),
    Metric("mean_distinct_1", "mean", "distinct_1", frozenset({TEXT}), False, "mean distinct-1 (unique words / words)"),
    Metric("mean_distinct_2", "mean", "distinct_2", frozenset({TEXT}), False, "mean distinct-2 (unique bigrams / bigrams)"),
    Metric("attribute_mention_rate", "mean", "mentions_attributes", frozenset({TEXT}), False,
           "share of items with attributes whose output names every attribute value"),
    Metric("blocklist_hits", "sum", "blocklist_hits", frozenset({TEXT}), True, "blocklist terms found, in all outputs"),
    Metric("blocklist_rate", "mean", "blocklisted", frozenset({TEXT}), True, "share of outputs with a blocklist hit"),
    Metric("pii_hits", "sum", "pii_hits", frozenset({TEXT}), True, "e-mail, phone and card-number matches, in all outputs"),
    Metric("pii_rate", "mean", "has_pii", frozenset({TEXT}), True, "share of outputs with a PII match"),
    Metric("nan_rate", "mean", "nan", frozenset({IMAGE}), True, "share of images with NaN/inf pixels"),
    Metric("black_rate", "mean", "black", frozenset({IMAGE}), True, "share of black images"),
    Metric("uniform_rate", "mean", "uniform", frozenset({IMAGE}), True, "share of images of one flat colour"),
    Metric("size_mismatch_rate", "mean", "size_mismatch", frozenset({IMAGE}), True, "share not of the requested size"),
    Metric("near_duplicate_rate", "mean", "near_duplicate", frozenset({IMAGE}), True,
           "share of images within the dHash distance of an earlier image"),
    Metric("near_duplicates", "sum", "near_duplicate", frozenset({IMAGE}), True, "number of near-duplicate images"),
    Metric("mean_brightness", "mean", "brightness", frozenset({IMAGE}), False, "mean luma, 0..1"),
    Metric("min_brightness", "min", "brightness", frozenset({IMAGE}), False, "darkest image's mean luma"),
    Metric("max_brightness", "max", "brightness", frozenset({IMAGE}), True, "brightest image's mean luma"),
    Metric("mean_contrast", "mean", "contrast", frozenset({IMAGE}), False, "mean luma standard deviation"),
    Metric("min_contrast", "min", "contrast", frozenset({IMAGE}), False, "flattest image's luma standard deviation"),
    Metric("unsafe_rate", "mean", "unsafe", frozenset({IMAGE}), True, "share flagged by the safety hook"),
]}

OPS = ("<=", ">=", "==", "<", ">")
GATE_RE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


def parse_gate(expression: str) -> Gate:
    """``"empty_rate <= 0.01"`` -> Gate; ValueError naming the bad part and the allowed values."""
    match = GATE_RE.match(expression)
    if not match:
        raise ValueError(
            f"gate {expression!r} is not 'METRIC OP NUMBER' (OP one of {', '.join(OPS)}), "
            "e.g. 'empty_rate <= 0.01'"
        )
    name, op, number = match.groups()
    if name not in METRICS:
        raise ValueError(f"gate {expression!r}: unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
    return Gate(name, op, float(number))


def compare(value: float, op: str, threshold: float) -> bool:
    return {
        "<=": value <= threshold, ">=": value >= threshold, "==": value == threshold,
        "<": value < threshold, ">": value > threshold,
    }[op]


# --- evaluation -------------------------------------------------------------------------------


def _bounds(gate: Gate) -> dict[str, Any]:
    t = gate.threshold
    return {
        "<=": {"max_value": t}, "<": {"max_value": t, "strict_max": True},
        ">=": {"min_value": t}, ">": {"min_value": t, "strict_min": True},
        "==": {"min_value": t, "max_value": t},
    }[gate.op]


def _expectation(gx: Any, gate: Gate, index: int) -> Any:
    metric = METRICS[gate.metric]
    e = gx.expectations
    meta = {"gate": gate.text, "index": index}
    kinds = {
        "mean": e.ExpectColumnMeanToBeBetween,
        "sum": e.ExpectColumnSumToBeBetween,
        "min": e.ExpectColumnMinToBeBetween,
        "max": e.ExpectColumnMaxToBeBetween,
        "run": e.ExpectColumnValuesToBeBetween,
    }
    return kinds[metric.agg](column=metric.column, meta=meta, **_bounds(gate))


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _examples(gate: Gate, items: Any, ids: Sequence[str], run_examples: Mapping[str, list[str]]) -> list[str]:
    """Up to five ids on the wrong side of the gate, worst first."""
    metric = METRICS[gate.metric]
    if metric.agg == "run":
        return run_examples.get(gate.metric, [])[:EXAMPLES_PER_GATE]
    if metric.column not in items:
        return []
    column = items[metric.column].astype("float64")
    wrong_high = gate.op in ("<=", "<") or (gate.op == "==" and metric.higher_is_worse)
    if metric.agg in ("mean", "sum") and column.dropna().isin([0.0, 1.0]).all():
        bad = column[column == (1.0 if wrong_high else 0.0)]
    elif metric.agg == "sum":
        bad = column[column > 0] if wrong_high else column.dropna()
    else:
        threshold = gate.threshold
        bad = column[column > threshold] if wrong_high else column[column < threshold]
        if bad.empty:
            bad = column.dropna()
    bad = bad.sort_values(ascending=not wrong_high, kind="stable")
    return [str(ids[int(i)]) for i in bad.index[:EXAMPLES_PER_GATE]]


def evaluate_gates(
    gates: Iterable[Gate],
    items: Any,
    run_figures: Mapping[str, float | None],
    *,
    task: str,
    run_examples: Mapping[str, list[str]] | None = None,
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Check every gate with GX; returns (one verdict per gate, the raw GX results for Data Docs).

    ``items`` is the per-item pandas frame (an ``id`` column and metric columns, booleans as 0/1
    floats, NaN where a metric does not apply); ``run_figures`` the run-level figures.
    """
    import pandas as pd

    from genbatch.validation import gx_validate

    gates = list(gates)
    ids = list(items["id"]) if "id" in items else []
    verdicts: list[dict[str, Any]] = [{} for _ in gates]
    item_gates: list[tuple[int, Gate]] = []
    run_gates: list[tuple[int, Gate]] = []
    for i, gate in enumerate(gates):
        metric = METRICS[gate.metric]
        base = {"gate": gate.text, "metric": gate.metric, "op": gate.op, "threshold": gate.threshold,
                "value": None, "passed": False, "examples": [], "note": None}
        verdicts[i] = base
        if task not in metric.tasks:
            base["note"] = f"{gate.metric} does not apply to {task} runs; remove the gate"
        elif metric.agg == "run":
            run_gates.append((i, gate))
        elif metric.column not in items or items[metric.column].dropna().empty:
            base["note"] = f"no output has a value for {metric.column!r}, so {gate.metric} cannot be measured"
        else:
            item_gates.append((i, gate))

    results: list[Any] = []
    for asset, batch_gates, frame in (
        ("quality_items", item_gates, items),
        ("quality_run", run_gates, pd.DataFrame({k: [v] for k, v in run_figures.items()}).astype("float64")),
    ):
        if not batch_gates:
            continue
        result = gx_validate(
            asset, frame, f"{SUITE_NAME}.{asset}",
            lambda gx, todo=batch_gates: [_expectation(gx, g, i) for i, g in todo],  # type: ignore[misc]
            result_format="SUMMARY",
        )
        results.append(result)
        for r in result.results:
            index = int((r.expectation_config.meta or {})["index"])
            gate = gates[index]
            details = r.result or {}
            value = _number(details.get("observed_value"))
            if METRICS[gate.metric].agg == "run":
                value = _number(run_figures.get(gate.metric))
            exception = (r.exception_info or {}).get("exception_message")
            passed = bool(r.success) and value is not None and compare(value, gate.op, gate.threshold)
            verdicts[index].update(value=value, passed=passed, note=exception)
    for verdict, gate in zip(verdicts, gates, strict=True):
        if not verdict["passed"]:
            verdict["examples"] = _examples(gate, items, ids, run_examples or {})
    return verdicts, results


def failure_message(run_id: str, verdicts: Sequence[Mapping[str, Any]], report_uri: str) -> str:
    """One line per failed gate: threshold, measured value and up to five example ids."""
    failed = [v for v in verdicts if not v["passed"]]
    lines = [f"run {run_id}: {len(failed)} of {len(verdicts)} quality gate(s) failed; the run is not published:"]
    for v in failed:
        measured = "not measurable" if v["value"] is None else f"{v['value']:.4g}"
        examples = ", ".join(v["examples"]) if v["examples"] else "none"
        note = f" ({v['note']})" if v.get("note") else ""
        lines.append(f"  - {v['metric']}: measured {measured}, needs {v['op']} {v['threshold']:g}{note}; "
                     f"examples: {examples}")
    lines.append(f"See {report_uri}. Fix the cause and rerun, or publish anyway with an audited "
                 "quality.override {reason, approved_by} in the spec.")
    return "\n".join(lines)
