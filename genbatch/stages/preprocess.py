"""The preprocess hand-off: what the core tells the Beam pipeline, and what it reads back.

The pipeline itself (``beam_jobs.preprocess``) is run by the caller: the Airflow task launches it as a
subprocess or a Dataflow/Flink/Spark job (``operators/beam.py``, options from
:mod:`genbatch.stages.beam_launch`); embedded tools may run it in-process. The core only names it and
reads the committed shard plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from genbatch.io import storage
from genbatch.run.layout import RunLayout

PIPELINE_MODULE = "beam_jobs.preprocess"  # run as ``python -m beam_jobs.preprocess --run-dir URI [options]``


def pipeline_argv(run_dir: str, beam_args: Sequence[str] = ()) -> list[str]:
    """The pipeline's arguments for ``run_dir``, followed by Beam pipeline options (``--runner``...)."""
    return ["--run-dir", run_dir, *beam_args]


def shard_numbers(plan: Mapping[str, Any]) -> list[int]:
    """The shards of a plan (what the pipeline returns, or ``shards/_plan.json``), for one task each."""
    return [int(s["shard"]) for s in plan["shards"]]


def planned_shards(run_dir: str) -> list[int]:
    """The shards of the run's committed plan, read back from ``shards/_plan.json``."""
    return shard_numbers(storage.read_json(RunLayout(run_dir).shard_plan))


def committed_shards(run_dir: str) -> list[int] | None:
    """The shards of the committed plan, or None before the job commits (``_plan.json`` is written last)."""
    layout = RunLayout(run_dir)
    if not storage.exists(layout.shard_plan):
        return None
    return shard_numbers(storage.read_json(layout.shard_plan))
