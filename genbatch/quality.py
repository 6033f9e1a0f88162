"""Quality metrics on a run's outputs and the gate that decides whether it may publish.

Per-item metrics go to ``quality/metrics.parquet``; the aggregates and each gate's verdict
to ``quality/summary.json``; a human-readable ``report.html`` sits beside the manifest.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from genbatch import storage
from genbatch.errors import QualityGateFailed
from genbatch.reconcile import reconcile
from genbatch.records import iter_many, output_files
from genbatch.run_state import RunState, load_run_state


def mentions_all(text: str, attributes: dict[str, Any]) -> bool:
    """True when every attribute value appears in the text as whole words (case-insensitive)."""
    lowered = text.lower()
    return all(
        re.search(rf"(?<!\w){re.escape(str(v).lower())}(?!\w)", lowered) is not None
        for v in attributes.values()
        if str(v).strip()
    )


def item_metrics(state: RunState) -> list[dict[str, Any]]:
    rows = []
    for rec in iter_many(output_files(state.layout, state.num_shards)):
        text = rec.get("output", "")
        attrs = (rec.get("metadata") or {}).get("attributes")
        rows.append({
            "id": rec["id"],
            "chars": len(text) if state.spec.task == "text" else 0,
            "new_tokens": int(rec.get("new_tokens", 0)),
            "nonempty": bool(text.strip()) if state.spec.task == "text"
            else storage.exists(state.layout.path(rec["image_path"])),
            "mentions_attributes": mentions_all(text, attrs) if isinstance(attrs, dict) and state.spec.task == "text" else None,
            "batch_size": int(rec["timings"]["batch_size"]),
            "batch_s": float(rec["timings"]["batch_s"]),
            "output_key": text if state.spec.task == "text" else rec["image_path"],
        })
    return rows


def evaluate(state: RunState) -> dict[str, Any]:
    """Compute metrics and gate verdicts; write metrics.parquet, summary.json, report.html."""
    counts = reconcile(state.layout.root)
    rows = item_metrics(state)
    n = len(rows)
    gates = state.spec.quality
    dupes = Counter(r["output_key"] for r in rows)
    mention_flags = [r["mentions_attributes"] for r in rows if r["mentions_attributes"] is not None]
    metrics: dict[str, float | None] = {
        "success_rate": counts.generated / counts.accepted if counts.accepted else 0.0,
        "reject_rate": counts.rejected / counts.input if counts.input else 0.0,
        "nonempty_rate": sum(r["nonempty"] for r in rows) / n if n else 0.0,
        "duplicate_output_rate": sum(c - 1 for c in dupes.values()) / n if n else 0.0,
        "attribute_mention_rate": sum(mention_flags) / len(mention_flags) if mention_flags else None,
        "mean_new_tokens": sum(r["new_tokens"] for r in rows) / n if n else 0.0,
    }
    checks = [
        ("success_rate", ">=", gates.min_success_rate),
        ("reject_rate", "<=", gates.max_reject_rate),
        ("nonempty_rate", ">=", gates.min_nonempty_rate),
        ("duplicate_output_rate", "<=", gates.max_duplicate_output_rate),
    ]
    if gates.min_attribute_mention_rate is not None:
        checks.append(("attribute_mention_rate", ">=", gates.min_attribute_mention_rate))
    verdicts = []
    for name, op, threshold in checks:
        value = metrics[name]
        passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        verdicts.append({"metric": name, "value": value, "op": op, "threshold": threshold, "passed": passed})
    summary = {
        "run_id": state.run_id,
        "counts": counts.to_json(),
        "metrics": metrics,
        "gates": verdicts,
        "passed": all(v["passed"] for v in verdicts) and counts.ok,
    }
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "output_key"} for r in rows],
                                 schema=_METRICS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    storage.write_bytes(state.layout.quality_metrics, buf.getvalue(), overwrite=True)
    storage.write_json(state.layout.quality_summary, summary, overwrite=True)
    storage.write_text(state.layout.report_html, render_report(summary), overwrite=True)
    return summary


_METRICS_SCHEMA = pa.schema([
    ("id", pa.string()), ("chars", pa.int64()), ("new_tokens", pa.int64()), ("nonempty", pa.bool_()),
    ("mentions_attributes", pa.bool_()), ("batch_size", pa.int64()), ("batch_s", pa.float64()),
])


def render_report(summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(g['metric'])}</td><td>{g['value'] if g['value'] is None else round(g['value'], 4)}</td>"
        f"<td>{html.escape(g['op'])} {g['threshold']}</td><td>{'PASS' if g['passed'] else 'FAIL'}</td></tr>"
        for g in summary["gates"]
    )
    counts = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in summary["counts"].items() if k != "problems")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>genbatch run "
        f"{html.escape(summary['run_id'])}</title></head><body><h1>Run {html.escape(summary['run_id'])}</h1>"
        f"<p>Verdict: <b>{'PASSED' if summary['passed'] else 'FAILED'}</b></p><h2>Counts</h2><ul>{counts}</ul>"
        f"<h2>Quality gates</h2><table border='1'><tr><th>metric</th><th>value</th><th>gate</th><th>verdict</th></tr>"
        f"{rows}</table></body></html>\n"
    )


def quality_gate(run_dir: str) -> dict[str, Any]:
    """Evaluate and raise QualityGateFailed (after writing the report) when any gate fails."""
    state = load_run_state(run_dir)
    summary = evaluate(state)
    if not summary["passed"]:
        failed = [f"{g['metric']}={g['value']} (needs {g['op']} {g['threshold']})" for g in summary["gates"] if not g["passed"]]
        failed += summary["counts"]["problems"]
        raise QualityGateFailed(
            f"run {state.run_id}: quality gate failed: {'; '.join(failed)}. See {state.layout.report_html}"
        )
    return summary
