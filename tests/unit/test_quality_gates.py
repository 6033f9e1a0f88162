"""Gates on a synthetic run directory (no Airflow, no model): GX verdicts, messages, override."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from genbatch.errors import GenbatchError, QualityGateFailed, SpecError
from genbatch.io import storage
from genbatch.quality.gates import evaluate_gates, failure_message
from genbatch.run.gates import METRICS, parse_gate
from genbatch.run.spec import parse_spec
from genbatch.run.state import RunState
from genbatch.stages.publish import publish
from genbatch.stages.quality import quality_gate
from tests.helpers import prepared_run

ATTRS = {"colour": "red", "material": "leather", "item": "backpack"}
GOOD = "A red backpack made of leather, vintage and made to last."


def _write_run(state: RunState, outputs: list[dict[str, Any]], prompts: dict[str, str] | None = None) -> None:
    """Lay out what validate, preprocess and one committed shard would have written."""
    layout = state.layout
    storage.write_json(layout.validation_report, {"rows": {"input": len(outputs)}})
    items = [{"id": o["id"], "prompt": (prompts or {}).get(o["id"], "colour: red | material: leather | "
                                                            "item: backpack\ndescription:"),
              "seed": i, "params": o.pop("_params", {}), "row_index": i} for i, o in enumerate(outputs)]
    Path(layout.shard_input(0, 1)).parent.mkdir(parents=True, exist_ok=True)
    Path(layout.shard_input(0, 1)).write_text("".join(json.dumps(it) + "\n" for it in items))
    storage.write_json(layout.shard_plan, {"est_cost_total": 1.0, "makespan_ratio": 1.0, "shards": []})
    records = [{"timings": {"batch_s": 0.01, "batch_size": len(outputs)}, "seed": 0, **o} for o in outputs]
    Path(layout.output_part(0, 0)).parent.mkdir(parents=True, exist_ok=True)
    Path(layout.output_part(0, 0)).write_text("".join(json.dumps(r) + "\n" for r in records))
    storage.write_json(layout.shard_manifest(0), {
        "shard": 0, "generated": len(outputs), "errored": 0,
        "timings": {"model_load_s": 0.5, "compute_s": 0.1, "wall_s": 0.7}})


def _text_outputs(n_good: int = 20, bad: dict[str, str] | None = None) -> list[dict[str, Any]]:
    outs = [{"id": f"sku-{i:03d}", "output": GOOD.replace("vintage", f"style {i}"), "new_tokens": 15,
             "metadata": {"attributes": ATTRS}} for i in range(n_good)]
    for ident, text in (bad or {}).items():
        outs.append({"id": ident, "output": text, "new_tokens": 40, "metadata": {"attributes": ATTRS}})
    return outs


BAD_TEXT = {
    "bad-empty": "",
    "bad-loop": "A red backpack made of leather made of leather made of leather made of leather",
    "bad-email": "A red backpack made of leather; mail jane@example.com to order.",
}


def test_parse_gate_and_catalogue() -> None:
    assert parse_gate("empty_rate <= 0.01").text == "empty_rate <= 0.01"
    assert parse_gate(" pii_hits==0 ").op == "=="
    with pytest.raises(ValueError, match="unknown metric 'adherance'"):
        parse_gate("adherance >= 0.9")
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        parse_gate("adherence => 0.9")
    assert all(m.agg in {"mean", "sum", "min", "max", "run"} for m in METRICS.values())
    with pytest.raises(SpecError, match="quality.override.reason"):
        parse_spec({"task": "text", "input": {"uri": "x"}, "model": {"name": "m", "version": 1},
                    "quality": {"override": {"reason": "ok", "approved_by": "ops"}}})


def test_gx_verdicts_strictness_and_examples() -> None:
    items = pd.DataFrame({"id": ["a", "b", "c", "d"], "empty": [0.0, 1.0, 0.0, 1.0],
                          "pii_hits": [0.0, 2.0, 0.0, 0.0], "brightness": [0.5, 0.01, 0.4, 0.3],
                          "adherent": [1.0, 0.0, np.nan, 1.0]})
    gates = [parse_gate(g) for g in ("empty_rate <= 0.5", "empty_rate < 0.5", "pii_hits == 0",
                                     "adherence >= 0.6", "min_brightness > 0.05", "success_rate >= 0.99")]
    verdicts, results = evaluate_gates(gates, items, {"success_rate": 0.9}, task="image",
                                       run_examples={"success_rate": ["e1"]})
    by_gate = {v["gate"]: v for v in verdicts}
    assert by_gate["empty_rate <= 0.5"]["passed"] is True
    assert by_gate["empty_rate < 0.5"]["passed"] is False
    assert by_gate["empty_rate < 0.5"]["examples"] == ["b", "d"]
    assert by_gate["pii_hits == 0"]["note"] == "pii_hits does not apply to image runs; remove the gate"
    assert by_gate["adherence >= 0.6"]["value"] == pytest.approx(2 / 3)  # NaN: not checkable, not counted
    assert by_gate["adherence >= 0.6"]["passed"] is True
    assert by_gate["min_brightness > 0.05"]["passed"] is False
    assert by_gate["min_brightness > 0.05"]["examples"] == ["b"]
    assert by_gate["success_rate >= 0.99"]["passed"] is False
    assert by_gate["success_rate >= 0.99"]["examples"] == ["e1"]
    assert [r.success for r in results] == [False, False]  # the GX suites themselves failed
    message = failure_message("r1", verdicts, "runs/r1/report.html")
    assert "min_brightness: measured 0.01, needs > 0.05" in message and "examples: b" in message


def test_injected_bad_text_outputs_fail_their_gates_and_block_publishing(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), generation={"max_new_tokens": 40}, quality={
        "min_nonempty_rate": 0.5, "max_duplicate_output_rate": 0.5,
        "gates": ["empty_rate <= 0.01", "repetition_rate == 0", "pii_hits == 0", "adherence >= 0.8"]})
    _write_run(state, _text_outputs(20, BAD_TEXT))
    with pytest.raises(QualityGateFailed) as info:
        quality_gate(state.layout.root)
    message = str(info.value)
    assert "3 of 8 quality gate(s) failed" in message
    assert "empty_rate: measured 0.04348, needs <= 0.01" in message and "examples: bad-empty" in message
    assert "repetition_rate: measured 0.04348, needs == 0; examples: bad-loop" in message
    assert "pii_hits: measured 1, needs == 0; examples: bad-email" in message
    summary = storage.read_json(state.layout.quality_summary)
    assert summary["passed"] is False and summary["publishable"] is False
    assert summary["metrics"]["adherence"] == pytest.approx(22 / 23)
    metrics = pd.read_parquet(state.layout.quality_metrics)
    assert set(metrics.loc[metrics["empty"], "id"]) == {"bad-empty"}
    assert set(metrics.loc[metrics["truncated"], "id"]) == set(BAD_TEXT)
    assert storage.exists(state.layout.path("quality", "data_docs.html"))
    report = Path(state.layout.report_html).read_text()
    assert "FAILED — NOT PUBLISHED" in report and "jane@example.com" in report
    with pytest.raises(GenbatchError, match="quality gate did not pass; refusing to publish"):
        publish(state.layout.root)
    assert not storage.exists(state.layout.success)


def test_override_publishes_with_warnings_recorded_in_summary_and_manifest(tmp_path: Path) -> None:
    override = {"reason": "known PII in a test fixture row, approved for the demo", "approved_by": "ops@example.com"}
    state = prepared_run(str(tmp_path / "runs"), quality={"gates": ["pii_hits == 0"], "override": override})
    _write_run(state, _text_outputs(10, {"bad-email": BAD_TEXT["bad-email"]}))
    summary = quality_gate(state.layout.root)
    assert summary["passed"] is False and summary["publishable"] is True
    assert summary["warnings"] == ["pii_hits == 0"]
    assert summary["override"] == {**override, "applied": True, "failed_gates": ["pii_hits == 0"]}
    manifest = publish(state.layout.root)
    assert storage.exists(state.layout.success)
    assert manifest["quality"]["override"]["approved_by"] == "ops@example.com"
    assert manifest["quality"]["passed"] is False
    assert {"gate": "pii_hits == 0", "value": 1.0, "passed": False} in manifest["quality"]["gates"]
    assert "Override applied" in Path(state.layout.report_html).read_text()


def test_an_unused_override_is_recorded_but_not_applied(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), quality={
        "override": {"reason": "standing approval for a flaky gate", "approved_by": "ops"}})
    _write_run(state, _text_outputs(5))
    summary = quality_gate(state.layout.root)
    assert summary["passed"] is True and summary["override"]["applied"] is False
    assert publish(state.layout.root)["quality"]["override"] is None


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_injected_bad_images_fail_their_gates(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), task="image", quality={
        "min_nonempty_rate": 0.0, "max_duplicate_output_rate": 1.0,
        "gates": ["black_rate == 0", "near_duplicates == 0", "size_mismatch_rate == 0", "min_contrast >= 0.04"]})
    rng = np.random.default_rng(0)
    noise = rng.random((64, 64, 3))
    texture = rng.random((64, 64, 3))
    red = np.stack([0.7 + 0.3 * texture[..., 0], 0.25 * texture[..., 1], 0.25 * texture[..., 2]], axis=-1)
    images = {"img-0": noise, "img-1": noise.copy(), "img-2": np.zeros((64, 64, 3)), "img-3": red,
              "img-4": rng.random((32, 32, 3))}
    outputs = []
    for ident, arr in images.items():
        rel = f"outputs/shard-00000/images/{ident}.png"
        storage.write_bytes(state.layout.path(rel), _png(arr))
        outputs.append({"id": ident, "image_path": rel, "metadata": {}})
    _write_run(state, outputs, prompts={i: ("a red bag" if i == "img-3" else "a bag") for i in images})
    with pytest.raises(QualityGateFailed) as info:
        quality_gate(state.layout.root)
    message = str(info.value)
    assert "black_rate: measured 0.2, needs == 0; examples: img-2" in message
    assert "near_duplicates: measured 1, needs == 0; examples: img-1" in message
    assert "size_mismatch_rate: measured 0.2, needs == 0; examples: img-4" in message
    assert "min_contrast: measured 0, needs >= 0.04; examples: img-2" in message
    metrics = pd.read_parquet(state.layout.quality_metrics).set_index("id")
    assert metrics.loc["img-1", "near_duplicate_of"] == "img-0"
    assert bool(metrics.loc["img-3", "adherent"]) is True and metrics.loc["img-3", "dominant_colour"] == "red"
    report = Path(state.layout.report_html).read_text()
    assert "id='contact-sheet'" in report and report.count('<figure><img alt="img-') == 5
