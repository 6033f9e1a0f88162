"""Run the batch pipeline's stages in-process, for evaluation runs inside another DAG.

The promotion DAG evaluates candidate and production "through the same batch pipeline": the core's
stage sequence (:mod:`genbatch.stages.sequence`), with Beam and the worker run in this process and
the quality gate's metrics kept without failing on its thresholds.
"""

from __future__ import annotations

from typing import Any


def run_pipeline_inline(spec_data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """prepare → validate → preprocess (Beam) → generate (each shard) → quality metrics."""
    from beam_jobs.preprocess import run as preprocess
    from genbatch.stages.preprocess import pipeline_argv, shard_numbers
    from genbatch.stages.quality import evaluation_result
    from genbatch.stages.sequence import Handoffs, run_sequence
    from models.registry import resolve_for_spec
    from models.worker import run_shard

    handoffs = Handoffs(
        preprocess=lambda state: shard_numbers(preprocess(pipeline_argv(state.layout.root))),
        generate=lambda state, shard: run_shard(state, shard, devices=["cpu"]),
    )
    done = run_sequence({**spec_data, "run_id": run_id}, run_id, resolve_model=resolve_for_spec, handoffs=handoffs,
                        evaluation=True)
    return evaluation_result(done.resolved, done.results["quality_gate"], done.results["generate"])


def evaluate_arm(versions: dict[str, Any], arm: str, airflow_run_id: str) -> dict[str, Any]:
    """One arm of a promotion (``production`` or ``candidate``) on the model's golden set, run inline."""
    from genbatch.run.spec import sanitize_run_id
    from models.promotion import evaluation_spec

    spec = evaluation_spec(versions, arm)
    return run_pipeline_inline(spec, sanitize_run_id(f"{airflow_run_id}-{arm}-v{spec['model']['version']}"))
