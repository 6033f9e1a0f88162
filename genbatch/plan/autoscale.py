"""``sharding.num_shards: auto``: how many shards (one pod each) a run gets.

:func:`decide_num_shards` is the decision, a pure function. :func:`auto_num_shards` feeds it at prepare
time, when the preprocess cost model has not run yet, so the input's cost is *estimated* from the file
(its row count and a cost per row). The preprocess stage later computes the exact cost
(``shards/_plan.json``) and the cost ceiling is checked against that, not against this estimate.

How rows and cost per row are estimated: docs/internals.md#genbatchplanautoscale
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from genbatch.io import storage
from genbatch.io.input_files import InputFile, open_input
from genbatch.plan.cost import accelerator_for, devices_per_shard, model_throughput
from genbatch.run.inputs import resolve_input_files
from genbatch.run.items import estimate_cost
from genbatch.run.spec import MAX_MAP_LENGTH, RunSpec

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


def decide_num_shards(total_cost_units: float, throughput_units_per_s: float, target_wall_s: float, gpu_quota: int,
                      gpus_per_shard: int, max_shards: int = MAX_MAP_LENGTH, *, startup_s: float = 0.0,
                      num_items: int | None = None) -> int:
    """The fewest shards that finish ``total_cost_units`` within ``target_wall_s``, within the quota.

    1. Each shard processes ``throughput_units_per_s × max(1, gpus_per_shard)`` cost units a second and
       spends ``startup_s`` (image pull, model load) before it starts, so it can do
       ``rate × (target_wall_s − startup_s)`` units in the target time.
    2. Shards needed = ceil(total / that); at least 1.
    3. Never more shards than can run at once (``gpu_quota // gpus_per_shard``; CPU shards, with
       ``gpus_per_shard=0``, count one device each against the same budget): extra shards would only
       queue and pay the startup again. Never more than ``max_shards`` (Airflow's max_map_length) or
       than there are items.

    When the target cannot be met (startup alone exceeds it, or the quota is too small), the result is
    the most shards allowed: the fastest the run can go.
    """
    if throughput_units_per_s <= 0 or not math.isfinite(throughput_units_per_s):
        raise ValueError(f"throughput_units_per_s must be a positive number, got {throughput_units_per_s!r}")
    if target_wall_s <= 0:
        raise ValueError(f"target_wall_s must be positive, got {target_wall_s!r}")
    if total_cost_units < 0 or not math.isfinite(total_cost_units):
        raise ValueError(f"total_cost_units must be a finite number >= 0, got {total_cost_units!r}")
    if gpus_per_shard < 0 or gpu_quota < 1 or max_shards < 1 or startup_s < 0:
        raise ValueError(f"need gpus_per_shard >= 0, gpu_quota >= 1, max_shards >= 1, startup_s >= 0; got "
                         f"{gpus_per_shard}, {gpu_quota}, {max_shards}, {startup_s}")
    devices = max(1, gpus_per_shard)
    concurrent = gpu_quota // devices
    if concurrent < 1:
        raise ValueError(f"one shard needs {gpus_per_shard} GPUs but the quota is {gpu_quota}: raise the quota "
                         "or lower execution.gpus_per_pod")
    cap = min(concurrent, max_shards, num_items if num_items is not None else max_shards)
    cap = max(1, cap)
    budget_s = target_wall_s - startup_s
    if budget_s <= 0:
        return cap
    per_shard_units = throughput_units_per_s * devices * budget_s
    needed = math.ceil(total_cost_units / per_shard_units - 1e-9) if total_cost_units else 1
    return max(1, min(needed, cap))


@dataclass(frozen=True)
class InputEstimate:
    """An input file's row count, size and estimated cost per row, measured before preprocessing."""

    rows: int
    bytes: int
    cost_per_row: float

    @property
    def total_cost_units(self) -> float:
        """Estimated cost units of the whole input: rows × cost per row."""
        return self.rows * self.cost_per_row


COUNT_BUDGET_BYTES = 256 * 1024 * 1024
"""Decompressed bytes :func:`estimate_input` reads to count rows; the rest of a large input is extrapolated."""


def count_rows(uri: str, fmt: str) -> int:
    """Rows of one uncompressed input file without parsing them (the approximations: docs/internals.md#genbatchplanautoscale)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(io.BytesIO(storage.read_bytes(uri))).metadata.num_rows)
    lines = sum(1 for line in storage.iter_lines(uri, errors="surrogateescape") if line.strip())
    return max(0, lines - 1) if fmt == "csv" else lines


def _count_file(file: InputFile, budget: int) -> tuple[float, int]:
    """(rows, decompressed bytes read) of one file; a file cut off by ``budget`` is extrapolated by how much
    of its stored bytes the cut consumed."""
    with open_input(file) as stream:
        if file.format == "parquet":
            import pyarrow.parquet as pq

            return float(pq.ParquetFile(stream).metadata.num_rows), 0
        raw = getattr(stream, "fileobj", stream)  # the stored bytes under a gzip stream
        lines = read = 0
        for line in stream:
            read += len(line)
            lines += bool(line.strip())
            if read >= budget:
                break
        else:
            return float(max(0, lines - 1) if file.format == "csv" else lines), read
        consumed = max(1, int(raw.tell()))
        return lines * file.bytes / min(consumed, file.bytes or 1), read


def estimate_rows(files: list[InputFile], budget: int = COUNT_BUDGET_BYTES) -> int:
    """Rows of the input: counted in whole files while ``budget`` lasts, the remaining files extrapolated
    from the rows per stored byte of the counted ones."""
    rows = 0.0
    counted_bytes = 0
    left = budget
    for position, file in enumerate(files):
        if left <= 0 and counted_bytes:
            rest = sum(f.bytes for f in files[position:])
            return round(rows + rest * rows / counted_bytes)
        file_rows, read = _count_file(file, max(left, 1))
        rows += file_rows
        counted_bytes += file.bytes
        left -= read
    return round(rows)


def estimate_input(spec: RunSpec, files: list[InputFile] | None = None) -> InputEstimate:
    """Rows and estimated cost per row of the spec's input files (before preprocessing)."""
    files = resolve_input_files(spec.input) if files is None else files
    rows = estimate_rows(files)
    size = sum(f.bytes for f in files)
    gen = spec.generation
    prompt_chars = min(size / rows if rows else 0.0, float(spec.input.max_prompt_chars))
    per_row = estimate_cost(spec.task, prompt_tokens=math.ceil(prompt_chars / CHARS_PER_TOKEN),
                            max_new_tokens=gen.max_new_tokens, steps=gen.num_inference_steps,
                            height=gen.height, width=gen.width)
    return InputEstimate(rows=rows, bytes=size, cost_per_row=per_row)


def auto_num_shards(spec: RunSpec, card: dict[str, Any] | None) -> dict[str, Any]:
    """The decision for ``num_shards: auto`` and everything it was made from (recorded in the run)."""
    sharding = spec.sharding
    accelerator = accelerator_for(spec)
    throughput, source = model_throughput(spec, card, accelerator)
    est = estimate_input(spec)
    gpus = spec.execution.gpus_per_pod if spec.execution.backend == "kubernetes" else devices_per_shard(spec)
    num_shards = decide_num_shards(est.total_cost_units, throughput, sharding.target_wall_s, sharding.gpu_quota,
                                   gpus, MAX_MAP_LENGTH, startup_s=spec.cost.shard_startup_s,
                                   num_items=max(1, est.rows))
    decision = {
        "num_shards": num_shards,
        "input": {**asdict(est), "total_cost_units": est.total_cost_units},
        "throughput_per_device_s": throughput,
        "throughput_source": source,
        "accelerator": accelerator,
        "target_wall_s": sharding.target_wall_s,
        "gpu_quota": sharding.gpu_quota,
        "gpus_per_shard": gpus,
        "shard_startup_s": spec.cost.shard_startup_s,
        "max_shards": MAX_MAP_LENGTH,
    }
    log.info("auto shards: %s (%.6g cost units over %s rows at %.6g/device-s from %s, target %ss, quota %s)",
             num_shards, est.total_cost_units, est.rows, throughput, source, sharding.target_wall_s, sharding.gpu_quota)
    return decision
