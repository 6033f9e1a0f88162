"""Quality metrics on a run's outputs and the gate that decides whether it may publish.

1. Read every output record and the shard item it came from (prompt, per-item params).
2. Compute per-item metrics (:mod:`genbatch.quality.metrics`) and run-wide duplicates.
3. Check the spec's gates as a Great Expectations suite on the metrics table
   (:mod:`genbatch.quality.gates`).
4. Write ``quality/metrics.parquet`` (per item), ``quality/summary.json`` (aggregates, verdicts,
   override), ``quality/data_docs.html`` (GX Data Docs of the gate suite) and ``report.html``.

:func:`quality_gate` raises :class:`QualityGateFailed` when a gate fails, after writing all of it,
unless the spec carries an audited ``quality.override`` (then the failures become warnings).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from genbatch.errors import QualityGateFailed
from genbatch.io import storage
from genbatch.quality.gates import evaluate_gates, failure_message
from genbatch.quality.metrics import (
    TextChecks,
    exact_duplicates,
    image_metrics,
    mentions_all,
    near_duplicates,
    schema_valid,
    text_metrics,
)
from genbatch.run.gates import METRICS, parse_gate
from genbatch.run.layout import SHARD_DIR_RE
from genbatch.run.reconcile import Reconciliation, reconcile
from genbatch.run.records import error_files, iter_jsonl, iter_many, output_files, reject_files
from genbatch.run.state import RunRef, RunState, as_run_state
from genbatch.stages.published import ensure_unpublished

__all__ = ["evaluate", "item_metrics", "mentions_all", "quality_gate"]

log = logging.getLogger(__name__)

BOOL_COLUMNS = (
    "empty", "nonempty", "duplicate", "truncated", "repetition_loop", "adherent", "mentions_attributes",
    "blocklisted", "has_pii", "size_ok", "size_mismatch", "nan", "black", "uniform", "near_duplicate",
    "unsafe", "unreadable", "schema_valid",
)  # fmt: skip
REPORT_IMAGES = 48
HTML = "text/html; charset=utf-8"


@dataclass
class ItemTable:
    """Per-item metric rows plus what the report shows beside them (prompt, output, image bytes)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)


def _shard_items(state: RunState) -> dict[str, dict[str, Any]]:
    """``{id: {prompt, params}}`` from the shard inputs (output records do not repeat the prompt)."""
    items: dict[str, dict[str, Any]] = {}
    for shard in range(state.num_shards):
        uri = state.layout.shard_input(shard, state.num_shards)
        if storage.exists(uri):
            for rec in iter_jsonl(uri):
                items[str(rec["id"])] = {"prompt": rec.get("prompt") or "", "params": rec.get("params") or {}}
    return items


def _output_records(state: RunState) -> Iterator[tuple[int, dict[str, Any]]]:
    for uri in output_files(state.layout, state.num_shards):
        match = SHARD_DIR_RE.search(uri[len(state.layout.root):])
        shard = int(match.group(1)) if match else -1
        for rec in iter_jsonl(uri):
            yield shard, rec


def _load_image(state: RunState, rec: dict[str, Any]) -> tuple[Any, bytes | None]:
    from PIL import Image

    path = rec.get("image_path")
    if not path:
        return None, None
    try:
        data = storage.read_bytes(state.layout.path(path))
        image = Image.open(io.BytesIO(data))
        image.load()
        return image, data
    except Exception as exc:  # noqa: BLE001 - an unreadable image is a finding, not a crash
        log.warning("run %s: image %s of %s unreadable: %s", state.run_id, path, rec.get("id"), exc)
        return None, None


def item_metrics(state: RunState) -> ItemTable:
    """Per-item metrics of every output of the run (steps 1-2)."""
    spec = state.spec
    gen = spec.generation
    checks = TextChecks(blocklist=tuple(spec.quality.blocklist), pii_kinds=tuple(spec.quality.pii),
                        repetition_min_repeats=spec.quality.repetition_min_repeats)
    items = _shard_items(state)
    table = ItemTable()
    for shard, rec in _output_records(state):
        ident = str(rec["id"])
        item = items.get(ident, {"prompt": "", "params": {}})
        params = item["params"] if isinstance(item["params"], dict) else {}
        timings = rec.get("timings") or {}
        row: dict[str, Any] = {
            "id": ident,
            "shard": shard,
            "batch_size": int(timings.get("batch_size", 0)),
            "batch_s": float(timings.get("batch_s", 0.0)),
        }
        table.prompts[ident] = str(item["prompt"])
        if spec.task == "text":
            raw = rec.get("output")
            text = raw if isinstance(raw, str) else ""
            limit = int(params.get("max_new_tokens", gen.max_new_tokens))
            row.update(text_metrics(text, new_tokens=int(rec.get("new_tokens", 0)), max_new_tokens=limit,
                                    metadata=rec.get("metadata") or {}, checks=checks))
            if gen.response_schema is not None:
                row["schema_valid"] = schema_valid(text, gen.response_schema)
            row["blocklisted"] = row["blocklist_hits"] > 0
            row["has_pii"] = row["pii_hits"] > 0
            table.outputs[ident] = text
        else:
            image, data = _load_image(state, rec)
            requested = (int(params.get("height", gen.height)), int(params.get("width", gen.width)))
            if image is None:
                row.update(unreadable=True, nan=False, black=False, uniform=False, size_ok=False, empty=True)
            else:
                row.update(image_metrics(image, prompt=str(item["prompt"]), requested=requested))
                row["unreadable"] = False
                row["empty"] = bool(row["nan"] or row["black"] or row["uniform"])
                if data is not None and len(table.images) < REPORT_IMAGES:
                    table.images[ident] = data
            row["size_mismatch"] = not row["size_ok"]
        row["nonempty"] = not row["empty"]
        table.rows.append(row)
    _mark_duplicates(state, table)
    return table


def _mark_duplicates(state: RunState, table: ItemTable) -> None:
    """Text: an output identical to an earlier one (by id). Images: near-duplicate by dHash."""
    if state.spec.task == "text":
        dupes = exact_duplicates({i: " ".join(t.split()).lower() for i, t in table.outputs.items() if t.strip()})
        for row in table.rows:
            row["duplicate_of"] = dupes.get(row["id"])
            row["duplicate"] = row["id"] in dupes
        return
    hashes = {r["id"]: r["dhash"] for r in table.rows if r.get("dhash")}
    near = near_duplicates(hashes, state.spec.quality.near_duplicate_max_distance)
    for row in table.rows:
        row["near_duplicate_of"] = near.get(row["id"])
        row["near_duplicate"] = row["id"] in near
        row["duplicate"] = row["near_duplicate"]
        row["duplicate_of"] = row["near_duplicate_of"]


def _frames(rows: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(the frame written to parquet, the same with booleans as 0/1 floats for GX)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame({"id": pd.Series([], dtype="string")})
    for column in frame.columns:
        if column in BOOL_COLUMNS:
            frame[column] = frame[column].astype("boolean")
    numeric = frame.copy()
    for column in numeric.columns:
        if column in BOOL_COLUMNS:
            numeric[column] = numeric[column].astype("Float64").astype("float64")
    return frame, numeric


def _aggregates(numeric: Any, task: str, run_figures: dict[str, float | None]) -> dict[str, float | None]:
    """Every catalogue metric that applies to the task, measured (None when nothing to measure)."""
    out: dict[str, float | None] = {}
    for metric in METRICS.values():
        if task not in metric.tasks:
            continue
        if metric.agg == "run":
            out[metric.name] = run_figures.get(metric.name)
            continue
        if metric.column not in numeric or numeric[metric.column].dropna().empty:
            out[metric.name] = 0.0 if metric.agg == "sum" else None
            continue
        column = numeric[metric.column].dropna().astype("float64")
        value = {"mean": column.mean, "sum": column.sum, "min": column.min, "max": column.max}[metric.agg]()
        out[metric.name] = round(float(value), 6)
    return out


def _run_figures(counts: Reconciliation) -> dict[str, float | None]:
    return {
        "success_rate": counts.generated / counts.accepted if counts.accepted else 0.0,
        "reject_rate": counts.rejected / counts.input if counts.input else 0.0,
        "error_rate": counts.errored / counts.accepted if counts.accepted else 0.0,
    }


def _rejects(state: RunState) -> tuple[dict[str, int], list[dict[str, Any]]]:
    records = list(iter_many(reject_files(state.layout)))
    by_rule = dict(Counter(str(r.get("rule")) for r in records).most_common())
    return by_rule, [{"id": r.get("id"), "rule": r.get("rule"), "reason": r.get("reason")} for r in records[:200]]


def _errors(state: RunState) -> list[dict[str, Any]]:
    return [{"id": r.get("id"), "error": str(r.get("error"))[:300]}
            for r in iter_many(error_files(state.layout, state.num_shards))]


def _shard_timings(state: RunState) -> list[dict[str, Any]]:
    out = []
    for shard in range(state.num_shards):
        uri = state.layout.shard_manifest(shard)
        if storage.exists(uri):
            m = storage.read_json(uri)
            out.append({"shard": shard, "generated": m.get("generated"), "errored": m.get("errored"),
                        **{k: float(v) for k, v in (m.get("timings") or {}).items()}})
    return out


def _model_card(state: RunState) -> dict[str, Any] | None:
    """The registry card of the run's model version, when the registry is reachable."""
    uri = storage.join(state.model.uri, "card.json")
    try:
        card = storage.read_json(uri)
    except Exception as exc:  # noqa: BLE001 - lineage is optional in the report
        log.info("run %s: model card %s not readable (%s); report shows no lineage", state.run_id, uri, exc)
        return None
    return dict(card) if isinstance(card, dict) else None


def evaluate(state: RunState) -> dict[str, Any]:
    """Compute metrics and gate verdicts; write metrics.parquet, summary.json, data docs, report.html."""
    from genbatch.plan.cost import figures_for_run
    from genbatch.quality.canary import evaluate_canary
    from genbatch.quality.expectations import data_docs_html
    from genbatch.quality.report import ReportData, render_report

    counts = reconcile(state)
    table = item_metrics(state)
    frame, numeric = _frames(table.rows)
    run_figures = _run_figures(counts)
    rejects_by_rule, reject_examples = _rejects(state)
    errors = _errors(state)
    run_examples = {
        "reject_rate": [str(r["id"]) for r in reject_examples if r["id"]],
        "success_rate": [str(e["id"]) for e in errors],
        "error_rate": [str(e["id"]) for e in errors],
    }
    gates = [parse_gate(g) for g in state.spec.quality.gate_expressions()]
    verdicts, gx_results = evaluate_gates(gates, numeric, run_figures, task=state.spec.task,
                                          run_examples=run_examples)
    passed = all(v["passed"] for v in verdicts) and counts.ok
    override = state.spec.quality.override
    message = None if passed else failure_message(state.run_id, verdicts, state.layout.report_html)
    if not counts.ok:
        message = (message or f"run {state.run_id}: counts do not reconcile") + "\n  - counts: " + "; ".join(counts.problems)
    overridden = not passed and override is not None and counts.ok
    summary: dict[str, Any] = {
        "run_id": state.run_id,
        "task": state.spec.task,
        "model": {"name": state.model.name, "version": state.model.version, "uri": state.model.uri},
        "counts": counts.to_json(),
        "metrics": _aggregates(numeric, state.spec.task, run_figures),
        "gates": verdicts,
        "passed": passed,
        "publishable": passed or overridden,
        "override": None if override is None else {
            **override.model_dump(mode="json"),
            "applied": overridden,
            "failed_gates": [v["gate"] for v in verdicts if not v["passed"]],
        },
        "warnings": [v["gate"] for v in verdicts if not v["passed"]] if overridden else [],
        "failure_message": message,
        "rejects_by_rule": rejects_by_rule,
        "canary": evaluate_canary(state, frame),
        "evaluated_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    layout = state.layout
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    storage.write_bytes(layout.quality_metrics, buf.getvalue(), overwrite=True)
    storage.write_json(layout.quality_summary, summary, overwrite=True)
    if gx_results:
        storage.write_text(layout.quality_docs, data_docs_html(gx_results), overwrite=True,
                           content_type=HTML)
    report = ReportData(
        summary=summary, items=frame, prompts=table.prompts, outputs=table.outputs, images=table.images,
        reject_examples=reject_examples, errors=errors, shard_timings=_shard_timings(state),
        run_state=state.to_json(), card=_model_card(state), cost=figures_for_run(state),
    )
    storage.write_text(layout.report_html, render_report(report), overwrite=True, content_type=HTML)
    return summary


def quality_gate(run: RunRef) -> dict[str, Any]:
    """Evaluate and raise QualityGateFailed (after writing the report) unless the run may publish."""
    state = as_run_state(run)
    ensure_unpublished(state.layout, "quality_gate")  # erasure's re-evaluation calls evaluate() on purpose
    summary = evaluate(state)
    if not summary["publishable"]:
        raise QualityGateFailed(summary["failure_message"])
    if not summary["passed"]:
        override = summary["override"]
        log.warning("run %s: quality gates failed but publishing under override approved by %s (%s): %s",
                    state.run_id, override["approved_by"], override["reason"], ", ".join(summary["warnings"]))
    return summary


def evaluation_result(state: RunState, summary: dict[str, Any], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """An evaluation run's result (model promotion): per-item metrics, summary metrics, items per compute-s."""
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(storage.read_bytes(state.layout.quality_metrics)))
    compute_s = sum(m["timings"]["compute_s"] for m in manifests)
    generated = sum(m["generated"] for m in manifests)
    return {
        "run_dir": state.layout.root,
        "version": state.model.version,
        "items": table.to_pydict(),
        "throughput": generated / compute_s if compute_s else 0.0,
        "summary_metrics": summary["metrics"],
    }
