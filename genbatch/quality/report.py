"""report.html: one self-contained page per run (inline CSS, charts as base64 PNGs, no scripts).

Sections: verdict and counts, the gate table, aggregate metrics, histograms and flag counts,
sample outputs beside their prompts (flagged ones first), an image contact sheet (image runs),
rejects by rule, generation errors, per-shard timings, and the model version with its lineage.

Charts are drawn with matplotlib's Agg canvas on a bare ``Figure`` (no pyplot, no global state),
so rendering works in a worker thread and on a machine without a display.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SAMPLES = 20
FLAGGED_SAMPLES = 10
FLAG_LABELS = {
    "text": [("empty", "empty"), ("truncated", "truncated"), ("repetition_loop", "repetition loop"),
             ("adherent", "not adherent"), ("duplicate", "duplicate"), ("has_pii", "PII"),
             ("blocklisted", "blocklist")],
    "image": [("empty", "blank (black/uniform/NaN)"), ("size_mismatch", "wrong size"),
              ("near_duplicate", "near-duplicate"), ("adherent", "not adherent"), ("unsafe", "unsafe"),
              ("unreadable", "unreadable")],
}  # fmt: skip
CARD_KEYS = ("steps", "final_loss", "heldout_mention_rate", "num_parameters", "architecture", "seed",
             "corpus_size", "torch_version", "transformers_version", "diffusers_version")  # fmt: skip

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin:28px 0 10px;border-bottom:1px solid #d7dbe2;padding-bottom:4px}
.verdict{display:inline-block;padding:4px 12px;border-radius:4px;font-weight:600;color:#fff}
.pass{background:#1f7a3a}.fail{background:#b3261e}.warn{background:#a15c00}
.banner{background:#fff4e0;border:1px solid #e0a040;padding:10px 14px;border-radius:4px;margin:12px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:14px}
th,td{border:1px solid #d7dbe2;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fdecea}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #d7dbe2;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.charts figure{margin:0;background:#fff;border:1px solid #d7dbe2;border-radius:6px;padding:6px}
img.chart{display:block;width:420px;height:auto}
.sheet{display:grid;grid-template-columns:repeat(auto-fill,minmax(110px,1fr));gap:8px}
.sheet figure{margin:0;background:#fff;border:1px solid #d7dbe2;padding:4px;text-align:center;font-size:12px}
.sheet img{width:96px;height:96px;image-rendering:pixelated}
pre{white-space:pre-wrap;margin:0;font-size:13px}
.flag{display:inline-block;background:#fdecea;color:#8c1d18;border-radius:3px;padding:0 5px;margin:1px;font-size:12px}
.muted{color:#667085}
"""


@dataclass
class ReportData:
    """Everything the page shows; gathered by :func:`genbatch.stages.quality.evaluate`."""

    summary: dict[str, Any]
    items: Any  # pandas frame of per-item metrics
    prompts: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, str] = field(default_factory=dict)
    images: Mapping[str, bytes] = field(default_factory=dict)
    reject_examples: Sequence[Mapping[str, Any]] = ()
    errors: Sequence[Mapping[str, Any]] = ()
    shard_timings: Sequence[Mapping[str, Any]] = ()
    run_state: Mapping[str, Any] = field(default_factory=dict)
    card: Mapping[str, Any] | None = None
    cost: Mapping[str, Any] | None = None  # genbatch.plan.cost.run_figures(); else derived from shard_timings


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, cls: str = "",
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
            else f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>"
            for c in row
        )
        body.append(f"<tr{rc}>{cells}</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


class _Raw(str):
    """Already-escaped HTML for a table cell."""


# --- charts -----------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.0))
    return fig, fig.add_subplot(1, 1, 1)


def _chart(title: str, fig: Any) -> str:
    return (f'<figure><img class="chart" alt="{_e(title)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption class='muted'>{_e(title)}</figcaption></figure>")


def _histogram(values: Any, title: str, xlabel: str, marker: float | None = None) -> str | None:
    data = [float(v) for v in values if v is not None and v == v]
    if not data:
        return None
    fig, ax = _figure()
    ax.hist(data, bins=min(30, max(5, len(set(data)))), color="#4062bb", edgecolor="white")
    if marker is not None:
        ax.axvline(marker, color="#b3261e", linestyle="--", label=f"limit {marker:g}")
        ax.legend(loc="upper left")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("items")
    return _chart(title, fig)


def _bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str, color: str = "#4062bb") -> str | None:
    if not labels:
        return None
    fig, ax = _figure()
    ax.bar(range(len(labels)), values, color=color)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _chart(title, fig)


def _shard_chart(timings: Sequence[Mapping[str, Any]]) -> str | None:
    if not timings:
        return None
    fig, ax = _figure()
    keys = [k for k in ("model_load_s", "compute_s", "wall_s") if any(k in t for t in timings)]
    width = 0.8 / max(1, len(keys))
    for j, key in enumerate(keys):
        ax.bar([i + j * width for i in range(len(timings))], [float(t.get(key, 0.0)) for t in timings],
               width=width, label=key)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(timings))])
    ax.set_xticklabels([str(t["shard"]) for t in timings])
    ax.set_xlabel("shard")
    ax.set_ylabel("seconds")
    ax.set_title("Per-shard timings")
    ax.legend(fontsize=8)
    return _chart("Per-shard timings", fig)


# --- sections ---------------------------------------------------------------------------------


def _flags(row: Mapping[str, Any], task: str) -> list[str]:
    out = []
    for column, label in FLAG_LABELS[task]:
        value = row.get(column)
        if value is None or value != value:  # missing or NaN / pd.NA
            continue
        try:
            flagged = (not bool(value)) if column == "adherent" else bool(value)
        except TypeError:
            continue
        if flagged:
            out.append(label)
    return out


def _flag_html(flags: Sequence[str]) -> _Raw:
    return _Raw("".join(f'<span class="flag">{_e(f)}</span>' for f in flags) or '<span class="muted">ok</span>')


def _records(items: Any) -> list[dict[str, Any]]:
    if items is None or len(items) == 0:
        return []
    records: list[dict[str, Any]] = items.astype(object).where(items.notna(), None).to_dict("records")
    return records


def _cost_figures(data: ReportData) -> tuple[Mapping[str, Any] | None, str]:
    """The run's cost figures: as handed in, else priced from the shard timings (devices taken from the spec)."""
    if data.cost is not None:
        return data.cost, ""
    if not data.shard_timings or not data.run_state.get("spec"):
        return None, ""
    from genbatch.errors import GenbatchError
    from genbatch.plan.cost import devices_per_shard, run_figures
    from genbatch.run.spec import parse_spec

    try:
        spec = parse_spec(dict(data.run_state["spec"]), source="report")
    except GenbatchError:
        return None, ""
    devices = list(spec.execution.devices or []) or ["device"] * devices_per_shard(spec)
    shards = [{"shard": t.get("shard"), "generated": t.get("generated") or 0, "devices": devices,
               "timings": {k: t.get(k, 0.0) for k in ("wall_s", "compute_s", "model_load_s")}}
              for t in data.shard_timings]
    return run_figures(spec, shards), " Devices per shard taken from the spec."


def _cost_section(data: ReportData) -> str:
    figures, caveat = _cost_figures(data)
    if figures is None:
        return ""

    from genbatch.plan.cost import format_usd

    def usd(value: Any) -> str:
        return format_usd(None if value is None else float(value))

    cards = [("device-seconds", _fmt(figures.get("device_s"))),
             ("compute device-s", _fmt(figures.get("compute_device_s"))),
             ("items / device-s", _fmt(figures.get("items_per_device_s"))),
             ("cost estimate", _e(usd(figures.get("usd")))),
             ("per 1k items", _e(usd(figures.get("usd_per_1k_items"))))]
    if figures.get("preflight_usd") is not None:
        cards.append(("estimated before run", _e(usd(figures["preflight_usd"]))))
    if figures.get("ceiling_usd") is not None:
        cards.append(("ceiling", _e(usd(figures["ceiling_usd"]))))
    html_cards = "".join(f'<div class="card"><span class="muted">{_e(k)}</span><b>{v}</b></div>' for k, v in cards)
    price = figures.get("price") or {}
    node = f" + {price.get('node_type')} at {usd(price.get('usd_per_node_hour'))}/node-hour" if price.get("node_type") else ""
    rate = (f"{price.get('accelerator')} at {usd(price.get('usd_per_device_hour'))}/device-hour{node}"
            + (" (spot)" if price.get("spot") else " (on-demand)"))
    note = f" {price['note']}." if price.get("note") else ""
    rows = [[f.get("shard"), f.get("devices"), f.get("device_s"), f.get("generated"), f.get("items_per_device_s"),
             usd(f.get("usd"))] for f in figures.get("shards") or []]
    table = _table(["shard", "devices", "device-s", "generated", "items / device-s", "cost"], rows, cls="cost")
    return (f"<h2 id='cost'>Cost</h2><div class='cards'>{html_cards}</div><p class='muted'>Device-seconds = shard "
            f"wall time × devices held (what is billed); priced as {_e(rate)}.{_e(note)}{_e(caveat)}</p>{table}")


def _summary_section(data: ReportData) -> str:
    s = data.summary
    if s["passed"]:
        verdict = '<span class="verdict pass">PASSED</span>'
    elif s["publishable"]:
        verdict = '<span class="verdict warn">FAILED GATES — PUBLISHED UNDER OVERRIDE</span>'
    else:
        verdict = '<span class="verdict fail">FAILED — NOT PUBLISHED</span>'
    counts = s["counts"]
    cards = "".join(f'<div class="card"><span class="muted">{_e(k)}</span><b>{_fmt(counts.get(k))}</b></div>'
                    for k in ("input", "accepted", "rejected", "generated", "errored", "items_lost",
                              "items_duplicated"))
    banner = ""
    override = s.get("override")
    if override and override.get("applied"):
        banner = (f'<div class="banner" id="override"><b>Override applied.</b> Approved by '
                  f'{_e(override["approved_by"])}: {_e(override["reason"])}. Failed gates published as '
                  f'warnings: {_e(", ".join(override["failed_gates"]))}</div>')
    problems = "".join(f"<li>{_e(p)}</li>" for p in counts.get("problems") or [])
    problems = f"<p>Count problems:</p><ul>{problems}</ul>" if problems else ""
    model = s["model"]
    return (f"<h1>Run {_e(s['run_id'])}</h1><p class='muted'>{_e(s['task'])} run · model "
            f"{_e(model['name'])} v{_e(model['version'])} · evaluated {_e(s.get('evaluated_at'))}</p>"
            f"<p>{verdict}</p>{banner}<h2 id='counts'>Counts</h2><div class='cards'>{cards}</div>{problems}"
            f"{_cost_section(data)}")


def _gates_section(data: ReportData) -> str:
    gates = data.summary["gates"]
    rows = [[g["gate"], g["value"], f"{g['op']} {g['threshold']:g}",
             _Raw('<b style="color:#1f7a3a">PASS</b>' if g["passed"] else '<b style="color:#b3261e">FAIL</b>'),
             ", ".join(g.get("examples") or []) or None, g.get("note")] for g in gates]
    table = _table(["gate", "measured", "threshold", "verdict", "examples", "note"], rows, cls="gates",
                   row_classes=["" if g["passed"] else "failed" for g in gates])
    metrics = data.summary["metrics"]
    mtable = _table(["metric", "value"], [[k, v] for k, v in metrics.items()], cls="metrics")
    return (f"<h2 id='gates'>Quality gates</h2>{table}<p class='muted'>Checked as the Great Expectations "
            f"suite <code>genbatch.quality</code> on <code>quality/metrics.parquet</code> "
            f"(Data Docs: <code>quality/data_docs.html</code>).</p><h2 id='metrics'>Metrics</h2>{mtable}")


def _charts_section(data: ReportData, records: list[dict[str, Any]]) -> str:
    task = data.summary["task"]
    charts: list[str | None] = []
    if task == "text":
        limit = records[0].get("max_new_tokens") if records else None
        charts.append(_histogram([r.get("new_tokens") for r in records], "Output length", "new tokens",
                                 float(limit) if limit else None))
        charts.append(_histogram([r.get("distinct_2") for r in records], "Distinct-2 per output", "distinct-2"))
        charts.append(_histogram([r.get("words") for r in records], "Words per output", "words"))
    else:
        charts.append(_histogram([r.get("brightness") for r in records], "Brightness", "mean luma (0-1)"))
        charts.append(_histogram([r.get("contrast") for r in records], "Contrast", "luma std (0-1)"))
    flag_counts = {label: sum(1 for r in records if label in _flags(r, task)) for _, label in FLAG_LABELS[task]}
    charts.append(_bars(list(flag_counts), list(flag_counts.values()), "Flagged items", "items", "#b3261e"))
    charts.append(_histogram([r.get("batch_s") for r in records], "Batch compute time per item's batch", "seconds"))
    shown = "".join(c for c in charts if c)
    return f"<h2 id='distributions'>Distributions</h2><div class='charts'>{shown}</div>"


def _samples_section(data: ReportData, records: list[dict[str, Any]]) -> str:
    task = data.summary["task"]
    flagged = [r for r in records if _flags(r, task)][:FLAGGED_SAMPLES]
    chosen_ids = {r["id"] for r in flagged}
    rest = [r for r in records if r["id"] not in chosen_ids][: SAMPLES - len(flagged)]
    rows = []
    for r in flagged + rest:
        if task == "text":
            output = _Raw(f"<pre>{_e(data.outputs.get(r['id'], ''))}</pre>")
            extra = r.get("adherence_missing")
        else:
            png = data.images.get(r["id"])
            output = _Raw(f'<img alt="{_e(r["id"])}" style="width:64px;image-rendering:pixelated" '
                          f'src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else "(no image)")
            extra = f"dominant {r.get('dominant_colour')}, prompt colour {r.get('prompt_colour')}"
        rows.append([r["id"], _Raw(f"<pre>{_e(data.prompts.get(r['id'], ''))}</pre>"), output,
                     _flag_html(_flags(r, task)), extra])
    table = _table(["id", "prompt", "output", "flags", "detail"], rows, cls="samples")
    return (f"<h2 id='samples'>Sample outputs</h2><p class='muted'>{len(flagged)} flagged items first, then "
            f"others in run order.</p>{table}")


def _contact_sheet(data: ReportData, records: list[dict[str, Any]]) -> str:
    if data.summary["task"] != "image" or not data.images:
        return ""
    by_id = {r["id"]: r for r in records}
    figures = []
    for ident, png in data.images.items():
        flags = _flags(by_id.get(ident, {}), "image")
        figures.append(f'<figure><img alt="{_e(ident)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                       f"<figcaption>{_e(ident)}<br>{_flag_html(flags)}</figcaption></figure>")
    return (f"<h2 id='contact-sheet'>Contact sheet</h2><p class='muted'>The first {len(figures)} images."
            f"</p><div class='sheet'>{''.join(figures)}</div>")


def _rejects_section(data: ReportData) -> str:
    by_rule = data.summary.get("rejects_by_rule") or {}
    chart = _bars(list(by_rule), list(by_rule.values()), "Rejects by rule", "rows", "#a15c00") if by_rule else ""
    rule_rows: list[list[Any]] = [[rule, n] for rule, n in by_rule.items()]
    table = _table(["rule", "rows"], rule_rows, cls="rejects")
    examples = _table(["id", "rule", "reason"], [[r.get("id"), r.get("rule"), r.get("reason")]
                                                 for r in list(data.reject_examples)[:10]], cls="reject-examples")
    errors = ""
    if data.errors:
        errors = ("<h3>Generation errors</h3>"
                  + _table(["id", "error"], [[e.get("id"), e.get("error")] for e in list(data.errors)[:10]]))
    body = f"<div class='charts'>{chart or ''}</div>{table}{examples if data.reject_examples else ''}"
    return f"<h2 id='rejects'>Rejects by rule</h2>{body if by_rule else '<p>No rejects.</p>'}{errors}"


def _timing_section(data: ReportData) -> str:
    chart = _shard_chart(data.shard_timings) or ""
    table = _table(["shard", "generated", "errored", "model_load_s", "compute_s", "wall_s"],
                   [[t.get("shard"), t.get("generated"), t.get("errored"), t.get("model_load_s"),
                     t.get("compute_s"), t.get("wall_s")] for t in data.shard_timings], cls="timings")
    return f"<h2 id='timings'>Per-shard timing</h2><div class='charts'>{chart}</div>{table}"


def _model_section(data: ReportData) -> str:
    state = data.run_state
    model = state.get("model") or {}
    spec = state.get("spec") or {}
    rows: list[list[Any]] = [["model", model.get("name")], ["version", model.get("version")],
            ["requested alias", model.get("requested_alias")], ["registry uri", model.get("uri")],
            ["params hash", state.get("params_hash")], ["code version", state.get("code_version")],
            ["generation params", _Raw(f"<pre>{_e(json.dumps(spec.get('generation'), sort_keys=True))}</pre>")]]
    card = data.card
    if card:
        rows.append(["lineage", _Raw(f"<pre>{_e(json.dumps(card.get('lineage'), sort_keys=True))}</pre>")])
        rows.append(["registered at", card.get("registered_at")])
        rows.append(["files (sha256 in card.json)", len(card.get("files") or {})])
        metrics = card.get("metrics") or {}
        rows += [[f"card: {k}", metrics[k]] for k in CARD_KEYS if k in metrics]
    else:
        rows.append(["lineage", "registry card not reachable from the quality task"])
    return f"<h2 id='model'>Model version and lineage</h2>{_table(['field', 'value'], rows, cls='model')}"


def _canary_section(data: ReportData) -> str:
    canary = data.summary.get("canary")
    if not canary:
        return ""
    rows = [(r["metric"], r["production"], r["candidate"], r["difference"],
             f"[{_fmt(r['ci95'][0])}, {_fmt(r['ci95'][1])}]", "PASS" if r["passed"] else "FAIL") for r in canary["rows"]]
    items = canary["items"]
    return (
        f"<section><h2>Canary: {_e(canary['candidate_model'])} vs {_e(canary['production_model'])}</h2>"
        f"<p>{items['candidate']} items ({_fmt(items['observed_fraction'])}) to the candidate by hash of id, "
        f"{items['production']} to production; verdict <b>{'PASS' if canary['passed'] else 'FAIL'}</b>"
        f" (tolerance {_fmt(canary['tolerance'])}).</p>"
        + _table(["metric", "production", "candidate", "difference", "95% CI", "verdict"], rows)
        + "</section>"
    )


def render_report(data: ReportData) -> str:
    """The whole page as one string."""
    records = _records(data.items)
    sections = [
        _summary_section(data),
        _gates_section(data),
        _canary_section(data),
        _charts_section(data, records),
        _samples_section(data, records),
        _contact_sheet(data, records),
        _rejects_section(data),
        _timing_section(data),
        _model_section(data),
    ]
    title = f"genbatch run {data.summary['run_id']}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        + "".join(sections)
        + "</main></body></html>\n"
    )
