"""Cost accounting: prices, device-seconds, the estimate before generation, the ceiling, ``genbatch cost``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import SpecError
from genbatch.io import storage
from genbatch.plan import cost
from genbatch.run.layout import RunLayout
from genbatch.run.spec import RunSpec, parse_spec
from tests.helpers import prepared_run

BASE = {"task": "text", "input": {"uri": "in.jsonl"}, "model": {"name": "m", "alias": "production"}}


def spec(**sections: Any) -> RunSpec:
    return parse_spec({**BASE, **sections})


def shard_manifest(shard: int, *, wall_s: float, compute_s: float, generated: int, devices: list[str]) -> dict[str, Any]:
    return {"shard": shard, "generated": generated, "errored": 0, "devices": devices,
            "timings": {"wall_s": wall_s, "compute_s": compute_s, "model_load_s": 1.0}}


# --- spec ------------------------------------------------------------------------------------------


def test_cost_section_defaults_and_overrides() -> None:
    s = spec()
    assert s.cost.ceiling_usd is None and s.cost.spot is False and s.cost.shard_startup_s == 60.0
    s = spec(cost={"ceiling_usd": 12.5, "spot": True, "accelerator": "nvidia-l4", "node_type": "g2-standard-8",
                   "price_table": {"accelerators": {"nvidia-l4": {"on_demand": 0.7}}}})
    assert s.cost.price_table.accelerators["nvidia-l4"].spot is None
    with pytest.raises(SpecError, match=r"cost.ceiling_usd.*greater than 0"):
        spec(cost={"ceiling_usd": 0})
    with pytest.raises(SpecError, match=r"cost.price_table.accelerators.x.on_demand"):
        spec(cost={"price_table": {"accelerators": {"x": {"on_demand": -1}}}})
    with pytest.raises(SpecError, match=r"cost.budget: unknown field"):
        spec(cost={"budget": 3})


def test_num_shards_accepts_auto_and_keeps_integers() -> None:
    assert spec(sharding={"num_shards": "auto"}).sharding.num_shards == "auto"
    assert spec(sharding={"num_shards": 7}).sharding.num_shards == 7
    assert spec().sharding.num_shards == 4
    with pytest.raises(SpecError, match=r"sharding.num_shards: .*'auto' or an integer greater than or equal to 1"):
        spec(sharding={"num_shards": "many"})


# --- prices ----------------------------------------------------------------------------------------


def test_price_table_merges_spec_overrides_over_the_defaults() -> None:
    s = spec(cost={"price_table": {"accelerators": {"nvidia-l4": {"on_demand": 0.7, "spot": 0.3},
                                                    "tpu-v5e": {"on_demand": 1.2}}}})
    table = cost.price_table(s)
    assert table["accelerators"]["nvidia-l4"] == {"on_demand": 0.7, "spot": 0.3}
    assert table["accelerators"]["tpu-v5e"] == {"on_demand": 1.2, "spot": 1.2}  # spot defaults to on-demand
    assert table["accelerators"]["nvidia-h100-80gb"] == cost.DEFAULT_PRICES["accelerators"]["nvidia-h100-80gb"]
    assert cost.DEFAULT_PRICES["accelerators"]["nvidia-l4"]["on_demand"] == 0.5603  # defaults untouched


@pytest.mark.parametrize(("sections", "devices", "expected"), [
    ({}, (), "cpu"),
    ({}, ("cuda:0",), "gpu"),
    ({"execution": {"devices": ["cuda:0", "cuda:1"]}}, (), "gpu"),
    ({"execution": {"backend": "kubernetes", "image": "w:1", "gpus_per_pod": 1, "gpu_type": "nvidia-l4"}}, (), "nvidia-l4"),
    ({"execution": {"backend": "kubernetes", "image": "w:1", "gpus_per_pod": 0}}, (), "cpu"),
    ({"cost": {"accelerator": "nvidia-tesla-t4"}, "execution": {"gpu_type": "nvidia-l4"}}, (), "nvidia-tesla-t4"),
])
def test_accelerator_of_a_run(sections: dict[str, Any], devices: tuple[str, ...], expected: str) -> None:
    assert cost.accelerator_for(spec(**sections), devices) == expected


def test_resolve_price_spot_node_and_unknown() -> None:
    s = spec(cost={"spot": True, "node_type": "g2-standard-8"})
    price = cost.resolve_price(s, "nvidia-l4")
    assert (price.usd_per_device_hour, price.usd_per_node_hour, price.note) == (0.2241, 0.1176, None)
    assert price.usd(3600, 1800) == pytest.approx(0.2241 + 0.0588)
    unknown = cost.resolve_price(spec(cost={"node_type": "z9-mega"}), "gpu")
    assert unknown.usd_per_device_hour is None and unknown.usd(10, 10) is None
    assert "cost.price_table.accelerators.gpu" in str(unknown.note) and "cost.price_table.nodes.z9-mega" in str(unknown.note)


# --- measured figures ------------------------------------------------------------------------------


def test_shard_and_run_figures() -> None:
    s = spec(cost={"accelerator": "nvidia-l4", "node_type": "g2-standard-8"})
    manifests = [shard_manifest(0, wall_s=100.0, compute_s=150.0, generated=400, devices=["cuda:0", "cuda:1"]),
                 shard_manifest(1, wall_s=50.0, compute_s=40.0, generated=100, devices=["cuda:0"])]
    figures = cost.run_figures(s, manifests, est_cost_units=19_000.0, preflight={"usd": 0.1})
    first, second = figures["shards"]
    assert first["device_s"] == 200.0 and first["items_per_device_s"] == 2.0 and first["devices"] == 2
    assert first["usd"] == pytest.approx(200 / 3600 * 0.5603 + 100 / 3600 * 0.294)
    assert second["device_s"] == 50.0 and second["items_per_device_s"] == 2.0
    assert figures["device_s"] == 250.0 and figures["compute_device_s"] == 190.0 and figures["items"] == 500
    assert figures["items_per_device_s"] == 2.0
    assert figures["usd"] == pytest.approx(first["usd"] + second["usd"])
    assert figures["usd_per_1k_items"] == pytest.approx(figures["usd"] * 2)
    assert figures["cost_units_per_device_s"] == 100.0  # the measured throughput to put on the model card
    assert figures["preflight_usd"] == 0.1 and figures["price"]["accelerator"] == "nvidia-l4"


def test_unpriced_run_has_null_cost_but_device_seconds() -> None:
    figures = cost.run_figures(spec(), [shard_manifest(0, wall_s=10, compute_s=5, generated=5, devices=["cuda:0"])])
    assert figures["usd"] is None and figures["usd_per_1k_items"] is None and figures["device_s"] == 10.0
    assert "no price for accelerator 'gpu'" in figures["price"]["note"]


# --- the estimate and the ceiling ------------------------------------------------------------------


def test_model_throughput_sources() -> None:
    s = spec()
    assert cost.model_throughput(s, {"metrics": {"throughput_cost_units_per_s": 900}}, "cpu")[0] == 900.0
    by_acc = {"metrics": {"throughput_cost_units_per_s": {"nvidia-l4": 30_000, "cpu": 700}}}
    assert cost.model_throughput(s, by_acc, "nvidia-l4") == \
        (30_000.0, "model card metrics.throughput_cost_units_per_s (nvidia-l4)")
    assert cost.model_throughput(s, by_acc, "nvidia-h100-80gb")[0] == cost.DEFAULT_THROUGHPUT[("text", "gpu")]
    assert cost.model_throughput(spec(cost={"throughput_per_device_s": 5}), None, "cpu") == \
        (5.0, "spec cost.throughput_per_device_s")
    value, source = cost.model_throughput(spec(task="image"), {"metrics": {}}, "cpu")
    assert value == cost.DEFAULT_THROUGHPUT[("image", "cpu")] and "conservative" in source


def test_estimate_is_compute_plus_startup_priced() -> None:
    s = spec(execution={"backend": "kubernetes", "image": "w:1", "gpus_per_pod": 2, "gpu_type": "nvidia-l4"},
             cost={"shard_startup_s": 120, "node_type": "g2-standard-16"})
    est = cost.estimate(s, est_cost_units=7_200_000, num_shards=4, card={"metrics": {"throughput_cost_units_per_s": 1000}})
    # 7.2M units / 1000 per device-s = 7200 device-s of compute; + 4 shards x 2 GPUs x 120 s startup.
    assert est["device_s"] == 7200 + 960
    assert est["wall_s_if_parallel"] == 7200 / 8 + 120
    node_s = 7200 / 2 + 4 * 120
    assert est["usd"] == pytest.approx(8160 / 3600 * 0.5603 + node_s / 3600 * 0.429)


def _with_plan(tmp_path: Path, est_cost_total: float, **sections: Any) -> str:
    state = prepared_run(str(tmp_path / "runs"), num_shards=2, **sections)
    storage.write_json(state.layout.shard_plan, {"est_cost_total": est_cost_total, "shards": [], "makespan_ratio": 1.0})
    return state.layout.root


def test_ceiling_check_passes_under_and_records_the_estimate(tmp_path: Path) -> None:
    run_dir = _with_plan(tmp_path, 36_000.0, cost={"ceiling_usd": 1.0})
    est = cost.check_ceiling(run_dir)
    # 36000 units / 200 (default text on cpu) = 180 device-s + 2 x 60 s startup = 300 device-s on cpu.
    assert est["device_s"] == 300.0 and est["within_ceiling"] is True
    assert est["usd"] == pytest.approx(300 / 3600 * 0.1942)
    assert storage.read_json(cost.preflight_uri(RunLayout(run_dir))) == est


def test_ceiling_breach_stops_with_a_message_that_names_the_numbers_and_the_fix(tmp_path: Path) -> None:
    run_dir = _with_plan(tmp_path, 36_000_000.0, cost={"ceiling_usd": 2.0, "accelerator": "nvidia-h100-80gb"})
    with pytest.raises(cost.CostCeilingExceeded) as err:
        cost.check_ceiling(run_dir)
    msg = str(err.value)
    assert "estimated cost $" in msg and "exceeds cost.ceiling_usd=$2.00" in msg and "stops before generation" in msg
    assert "nvidia-h100-80gb" in msg and "Raise cost.ceiling_usd" in msg and "cost.spot: true" in msg
    assert storage.read_json(cost.preflight_uri(RunLayout(run_dir)))["within_ceiling"] is False


def test_ceiling_fails_closed_without_a_price_and_is_ignored_without_a_ceiling(tmp_path: Path) -> None:
    run_dir = _with_plan(tmp_path / "a", 100.0, cost={"ceiling_usd": 100.0, "accelerator": "mystery-gpu"})
    with pytest.raises(cost.CostCeilingExceeded, match="cannot check cost.ceiling_usd=100.*mystery-gpu"):
        cost.check_ceiling(run_dir)
    est = cost.check_ceiling(_with_plan(tmp_path / "b", 1e12))
    assert est["within_ceiling"] is None and est["usd"] > 1000


def test_stage_wrapper_returns_a_small_summary(tmp_path: Path) -> None:
    from genbatch.stages.cost_check import check_cost_ceiling

    out = check_cost_ceiling(_with_plan(tmp_path, 1000.0, cost={"ceiling_usd": 5.0}))
    assert set(out) == {"usd", "ceiling_usd", "device_s", "throughput_source", "within_ceiling"}


def test_cost_check_operator_fails_the_task_without_retry(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.cost_check import CostCheckOperator

    run_dir = _with_plan(tmp_path, 1e12, cost={"ceiling_usd": 1.0})
    with pytest.raises(AirflowFailException, match="exceeds cost.ceiling_usd"):
        CostCheckOperator(task_id="cost_check", run_dir=run_dir).execute({})


# --- across runs -----------------------------------------------------------------------------------


def _published(root: Path, run_id: str, model: str, items: int, usd: float | None, device_s: float) -> None:
    run = root / run_id
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({
        "run_id": run_id, "model": {"name": model.split("@")[0], "version": int(model.split("@")[1])},
        "counts": {"generated": items},
        "cost_estimate": {"items": items, "usd": usd, "device_s": device_s, "compute_device_s": device_s / 2,
                          "est_cost_units": items * 50.0, "usd_per_1k_items": None if usd is None else usd / items * 1000,
                          "items_per_device_s": items / device_s, "price": {"accelerator": "nvidia-l4", "spot": True}},
    }))


def test_summary_per_run_per_model_version_and_per_1k_items(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _published(root, "a", "copy@1", 1000, 2.0, 400.0)
    _published(root, "b", "copy@1", 3000, 4.0, 1200.0)
    _published(root, "c", "copy@2", 500, None, 100.0)
    (root / "not-a-run").mkdir()
    summary = cost.summarise([str(root)])
    assert [r["run_id"] for r in summary["runs"]] == ["a", "b", "c"]
    v1 = summary["by_model_version"]["copy@1"]
    assert v1["runs"] == 2 and v1["items"] == 4000 and v1["usd"] == 6.0 and v1["usd_per_1k_items"] == 1.5
    assert v1["items_per_device_s"] == 2.5 and v1["cost_units_per_device_s"] == 250.0
    assert summary["by_model_version"]["copy@2"]["usd"] is None
    total = summary["total"]
    assert total["runs"] == 3 and total["usd"] == 6.0 and total["usd_per_1k_items"] == 1.5 and total["unpriced_runs"] == 1
    # A run dir given directly, and the text table.
    assert [r["run_id"] for r in cost.summarise([str(root / "b")])["runs"]] == ["b"]
    table = cost.format_table(summary)
    assert "copy@1" in table and "TOTAL" in table and "1.50" in table
    assert [cost.format_usd(v) for v in (1234.5, 0.25, 0.000142541, 0.0, None)] == \
        ["$1,234.50", "$0.2500", "$0.000143", "$0.0000", "n/a"]


def test_legacy_manifest_is_priced_from_its_shards(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), run_id="old")
    storage.write_json(state.layout.manifest, {
        "run_id": "old", "model": {"name": "fake", "version": 1}, "counts": {"generated": 10},
        "cost_estimate": {"est_cost_units": 500.0, "device_seconds": 12.0},
        "shards": [{"shard": 0, "generated": 10, "errored": 0, "timings": {"wall_s": 36.0, "compute_s": 10.0}}]})
    row = cost.run_cost(state.layout.root)
    assert row["items"] == 10 and row["device_s"] == 36.0 and row["usd"] == pytest.approx(0.01 * 0.1942)


def test_cli_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genbatch.cli.commands import main

    _published(tmp_path / "runs", "a", "copy@1", 1000, 2.0, 400.0)
    assert main(["cost", str(tmp_path / "runs")]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["usd_per_1k_items"] == 2.0
    assert main(["cost", "--table", str(tmp_path / "runs")]) == 0
    assert "TOTAL" in capsys.readouterr().out
    assert main(["cost", str(tmp_path / "empty")]) == 1


# --- the report ------------------------------------------------------------------------------------


def test_report_cost_section_from_figures_and_from_shard_timings() -> None:
    from genbatch.quality.report import ReportData, _cost_section

    figures = cost.run_figures(spec(cost={"ceiling_usd": 3.0}),
                               [shard_manifest(0, wall_s=36.0, compute_s=30.0, generated=90, devices=["cpu"])],
                               preflight={"usd": 0.002})
    html = _cost_section(ReportData(summary={}, items=None, cost=figures))
    assert "id='cost'" in html and "device-seconds" in html and "items / device-s" in html
    assert "$0.00194" in html and "estimated before run" in html and "ceiling" in html and "on-demand" in html
    derived = _cost_section(ReportData(summary={}, items=None, run_state={"spec": spec().to_json_dict()},
                                       shard_timings=[{"shard": 0, "generated": 90, "wall_s": 36.0, "compute_s": 30.0}]))
    assert "$0.00194" in derived and "taken from the spec" in derived
    assert _cost_section(ReportData(summary={}, items=None)) == ""


def test_figures_for_run_reads_the_committed_shards(tmp_path: Path) -> None:
    state = prepared_run(str(tmp_path / "runs"), num_shards=2)
    assert cost.figures_for_run(state) is None
    storage.write_json(state.layout.shard_plan, {"est_cost_total": 300.0, "shards": [], "makespan_ratio": 1.0})
    storage.write_json(state.layout.shard_manifest(1), shard_manifest(1, wall_s=36.0, compute_s=3.0, generated=9,
                                                                       devices=["cpu"]))
    figures = cost.figures_for_run(state)
    assert figures is not None and [s["shard"] for s in figures["shards"]] == [1]
    assert figures["cost_units_per_device_s"] == 100.0 and figures["usd"] == pytest.approx(0.01 * 0.1942)
