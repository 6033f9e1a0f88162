"""Quality gates checked as a Great Expectations suite over the per-item metrics table.

Each gate (the grammar and the metric catalogue live in :mod:`genbatch.run.gates`) becomes one GX
expectation (``ExpectColumnMeanToBeBetween``, ``...SumToBeBetween``, ...); the verdict is GX's.
Python only picks up to five example ids for a failed gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from genbatch.run.gates import METRICS, Gate, compare

EXAMPLES_PER_GATE = 5
SUITE_NAME = "genbatch.quality"


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

    from genbatch.quality.expectations import gx_validate

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
