"""Run the batch pipeline's stages in-process, for evaluation runs inside another DAG.

The promotion DAG evaluates candidate and production "through the same batch pipeline":
the very stage functions the batch_generation operators call, in the same order, with the
quality gate's metrics but without failing on its thresholds.
"""

from __future__ import annotations

import io
from typing import Any

from genbatch.io import storage


def run_pipeline_inline(spec_data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """prepare → validate → preprocess (Beam) → generate (each shard) → quality metrics."""
    import pyarrow.parquet as pq

    from beam_jobs.preprocess import run as preprocess
    from genbatch.run.state import load_run_state
    from genbatch.stages.prepare import prepare_run
    from genbatch.stages.quality import evaluate
    from genbatch.stages.validate import validate_input
    from models.registry import resolve_for_spec
    from models.worker import run_shard

    run_dir = prepare_run({**spec_data, "run_id": run_id}, run_id, resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    state = load_run_state(run_dir)
    manifests = [run_shard(run_dir, shard, devices=["cpu"]) for shard in range(state.num_shards)]
    summary = evaluate(state)
    table = pq.read_table(io.BytesIO(storage.read_bytes(state.layout.quality_metrics)))
    compute_s = sum(m["timings"]["compute_s"] for m in manifests)
    generated = sum(m["generated"] for m in manifests)
    return {
        "run_dir": run_dir,
        "version": state.model.version,
        "items": table.to_pydict(),
        "throughput": generated / compute_s if compute_s else 0.0,
        "summary_metrics": summary["metrics"],
    }
