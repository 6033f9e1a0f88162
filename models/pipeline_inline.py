"""Run the batch pipeline's stages from one process, for a promotion's evaluation runs.

The promotion DAG evaluates candidate and production "through the same batch pipeline": the core's
stage sequence (:mod:`genbatch.stages.sequence`), with the worker run in this process, the Beam
preprocess as its own process (``python -m beam_jobs.preprocess``: ``models`` never imports
``beam_jobs``), and the quality gate's metrics kept without failing on its thresholds. This process is
the worker command (``genbatch model evaluate-arm``, :mod:`models.model_jobs`), never the Airflow task:
it imports torch.
"""

from __future__ import annotations

import sys
from typing import Any

from genbatch.run.state import RunState


def preprocess(state: RunState) -> list[int]:
    """The Beam preprocess of the run as a child process (its log in ours); the shards it planned."""
    from genbatch.stages.generate import run_logged_command
    from genbatch.stages.preprocess import PIPELINE_MODULE, pipeline_argv, shard_numbers

    command = [sys.executable, "-m", PIPELINE_MODULE, *pipeline_argv(state.layout.root)]
    return shard_numbers(run_logged_command(command, f"preprocess of run {state.run_id}", "beam:"))


def run_pipeline_inline(spec_data: dict[str, Any], run_id: str) -> dict[str, Any]:
    """prepare → validate → preprocess (Beam) → generate (each shard) → quality metrics."""
    from genbatch.stages.quality import evaluation_result
    from genbatch.stages.sequence import Handoffs, run_sequence
    from models.registry import resolve_for_spec
    from models.worker import run_shard

    handoffs = Handoffs(
        preprocess=preprocess,
        # the spec's devices, else every visible GPU (an evaluation pod with a GPU uses it), else the CPU
        generate=lambda state, shard: run_shard(state, shard),
    )
    done = run_sequence({**spec_data, "run_id": run_id}, run_id, resolve_model=resolve_for_spec, handoffs=handoffs,
                        evaluation=True)
    return evaluation_result(done.resolved, done.results["quality_gate"], done.results["generate"])
