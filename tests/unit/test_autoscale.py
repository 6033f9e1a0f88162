"""``num_shards: auto``: the shard-count decision over realistic inputs, and its wiring into prepare_run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genbatch.io import storage
from genbatch.plan.autoscale import count_rows, decide_num_shards, estimate_input
from genbatch.run.model_ref import ModelVersion
from genbatch.run.spec import parse_spec

HOUR = 3600.0
# Realistic per-device throughputs in cost units per second (prompt + new tokens for text,
# steps x pixels for images).
L4_SMALL_LM = 20_000.0      # ~1B causal LM, batched, one L4
H100_7B_LM = 60_000.0       # 7B causal LM, batched, one H100
L4_SD15 = 2_600_000.0       # Stable Diffusion 1.5, 512x512, one L4
SD15_IMAGE = 30 * 512 * 512  # cost of one image: 30 steps x 512 x 512


@pytest.mark.parametrize(("case", "args", "expected"), [
    # 1M catalog rows of ~20 prompt + 40 new tokens in an hour on L4s: one shard is enough.
    ("1M short rows, 1 h", (1_000_000 * 60, L4_SMALL_LM, HOUR, 16, 1), 1),
    # 10M rows of 300 token positions: 3e9 / (20k x 3600) = 41.7 -> 42 shards within a quota of 64 ...
    ("10M rows, quota 64", (10_000_000 * 300, L4_SMALL_LM, HOUR, 64, 1), 42),
    # ... but only 16 at a time fit a 16-GPU quota: more shards would only queue.
    ("10M rows, quota 16", (10_000_000 * 300, L4_SMALL_LM, HOUR, 16, 1), 16),
    # 7B model, 2 GPUs per pod: 3e9 / (60k x 2 x 3600) = 6.9 -> 7 pods; a quota of 8 GPUs allows 4.
    ("7B on 2xH100, quota 32", (10_000_000 * 300, H100_7B_LM, HOUR, 32, 2), 7),
    ("7B on 2xH100, quota 8", (10_000_000 * 300, H100_7B_LM, HOUR, 8, 2), 4),
    # 200k SD 1.5 images in 4 h on L4s: 1.573e12 / (2.6M x 14400) = 42.01 -> 43; a quota of 32 caps it.
    ("200k images, 4 h, quota 64", (200_000 * SD15_IMAGE, L4_SD15, 4 * HOUR, 64, 1), 43),
    ("200k images, 4 h, quota 32", (200_000 * SD15_IMAGE, L4_SD15, 4 * HOUR, 32, 1), 32),
    # CPU pods (no GPU) count one device each against the same budget.
    ("CPU shards", (5_000_000, 200.0, HOUR, 8, 0), 7),
    # Airflow's max_map_length is the hard ceiling.
    ("max_map_length", (1e13, L4_SMALL_LM, 60.0, 100_000, 1), 1024),
    ("empty input", (0.0, L4_SMALL_LM, HOUR, 16, 1), 1),
])
def test_decide_num_shards(case: str, args: tuple[float, float, float, int, int], expected: int) -> None:
    assert decide_num_shards(*args) == expected, case


def test_startup_time_eats_into_the_target() -> None:
    total = 10_000_000 * 300
    # 300 s of image pull + model load leaves 3300 s: 3e9 / (20k x 3300) = 45.45 -> 46.
    assert decide_num_shards(total, L4_SMALL_LM, HOUR, 64, 1, startup_s=300) == 46
    # A target shorter than the startup cannot be met: go as wide as allowed.
    assert decide_num_shards(total, L4_SMALL_LM, 200, 64, 1, startup_s=300) == 64


def test_never_more_shards_than_items() -> None:
    assert decide_num_shards(3 * 1e9, 1.0, 60, 100, 1, num_items=3) == 3


def test_exact_fit_does_not_add_a_shard() -> None:
    assert decide_num_shards(4 * L4_SMALL_LM * HOUR, L4_SMALL_LM, HOUR, 16, 1) == 4


def test_monotonic_in_throughput_target_and_quota() -> None:
    total = 2e9
    by_throughput = [decide_num_shards(total, t, HOUR, 64, 1) for t in (5e3, 1e4, 2e4, 4e4, 8e4)]
    assert by_throughput == sorted(by_throughput, reverse=True) and by_throughput[0] > by_throughput[-1]
    by_target = [decide_num_shards(total, 1e4, t, 64, 1) for t in (900, 1800, 3600, 7200)]
    assert by_target == sorted(by_target, reverse=True)
    by_quota = [decide_num_shards(total, 1e4, HOUR, q, 1) for q in (4, 8, 16, 64)]
    assert by_quota == sorted(by_quota)
    # Whatever the inputs, the decision meets the target when the quota allows it.
    for n, t in zip(by_throughput, (5e3, 1e4, 2e4, 4e4, 8e4), strict=True):
        if n < 64:
            assert total / (n * t) <= HOUR


@pytest.mark.parametrize(("args", "message"), [
    ((1e6, 0.0, HOUR, 8, 1), "throughput_units_per_s must be a positive number"),
    ((1e6, 1e3, 0.0, 8, 1), "target_wall_s must be positive"),
    ((-1.0, 1e3, HOUR, 8, 1), "total_cost_units must be a finite number"),
    ((1e6, 1e3, HOUR, 4, 8), "one shard needs 8 GPUs but the quota is 4"),
    ((1e6, 1e3, HOUR, 0, 1), "gpu_quota >= 1"),
])
def test_bad_inputs_are_named(args: tuple[float, float, float, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide_num_shards(*args)


# --- estimating the input before preprocessing -----------------------------------------------------


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "prompt": f"colour: red | material: wool | item: thing number {i:04d}"} for i in range(n)]


def test_count_rows_for_each_format(tmp_path: Path) -> None:
    rows = _rows(25)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n\n")
    csv = tmp_path / "a.csv"
    csv.write_text("id,prompt\n" + "".join(f"{r['id']},{r['prompt']}\n" for r in rows))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert count_rows(str(jsonl), "jsonl") == 25
    assert count_rows(str(csv), "csv") == 25
    assert count_rows(str(parquet), "parquet") == 25


def test_estimate_input_text_and_image(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(100)))
    base = {"input": {"uri": str(path)}, "model": {"name": "m", "alias": "production"}}
    text = estimate_input(parse_spec({**base, "task": "text", "generation": {"max_new_tokens": 40}}))
    avg_bytes = path.stat().st_size / 100
    assert text.rows == 100 and text.cost_per_row == math.ceil(avg_bytes / 4) + 40
    image = estimate_input(parse_spec({**base, "task": "image",
                                       "generation": {"num_inference_steps": 30, "height": 512, "width": 512}}))
    assert image.cost_per_row == SD15_IMAGE and image.total_cost_units == 100 * SD15_IMAGE


# --- prepare_run -----------------------------------------------------------------------------------


def test_prepare_run_resolves_auto_to_an_int_and_records_why(tmp_path: Path) -> None:
    from genbatch.run.layout import RunLayout
    from genbatch.run.state import load_run_state
    from genbatch.stages.prepare import prepare_run

    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(300)))
    model_dir = tmp_path / "registry" / "m" / "versions" / "1"
    storage.write_json(str(model_dir / "card.json"), {"metrics": {"throughput_cost_units_per_s": {"cpu": 10.0}}})
    spec = {"task": "text", "input": {"uri": str(path)}, "model": {"name": "m", "alias": "production"},
            "generation": {"max_new_tokens": 48},
            "sharding": {"num_shards": "auto", "target_wall_s": 700, "gpu_quota": 8},
            "output": {"uri": str(tmp_path / "runs")}}
    run_dir = prepare_run(spec, "auto-run", resolve_model=lambda s: ModelVersion("m", 1, str(model_dir)))
    state = load_run_state(run_dir)
    decision = storage.read_json(RunLayout(run_dir).path("validation", "auto_shards.json"))
    units = decision["input"]["total_cost_units"]
    # 10 units/s from the card; 700 s target less 60 s startup leaves 640 s per shard.
    assert decision["throughput_source"].startswith("model card") and decision["throughput_per_device_s"] == 10.0
    assert state.num_shards == math.ceil(units / (10.0 * 640)) == decision["num_shards"]
    assert isinstance(state.num_shards, int) and 1 < state.num_shards <= 8
    assert state.spec.sharding.num_shards == "auto"  # the spec keeps what the user asked; the state has the int
    assert storage.read_json(RunLayout(run_dir).spec)["num_shards"] == state.num_shards
    # A retried prepare decides the same.
    assert prepare_run(spec, "auto-run", resolve_model=lambda s: ModelVersion("m", 1, str(model_dir))) == run_dir


def test_prepare_run_keeps_a_fixed_num_shards(tmp_path: Path) -> None:
    from genbatch.run.state import load_run_state
    from genbatch.stages.prepare import prepare_run

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(_rows(1)[0]) + "\n")
    spec = {"task": "text", "input": {"uri": str(path)}, "model": {"name": "m", "alias": "production"},
            "sharding": {"num_shards": 3}, "output": {"uri": str(tmp_path / "runs")}}
    run_dir = prepare_run(spec, "fixed", resolve_model=lambda s: ModelVersion("m", 1, str(tmp_path / "nowhere")))
    assert load_run_state(run_dir).num_shards == 3
    assert not storage.exists(str(Path(run_dir) / "validation" / "auto_shards.json"))
