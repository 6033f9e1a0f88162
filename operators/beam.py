"""The preprocess stage through the apache-beam provider's ``BeamRunPythonPipelineOperator``.

A factory, not a copy of provider code (DESIGN §5): it returns the provider's operator set up to
run ``python -m beam_jobs.preprocess --run_dir=<run dir> --token_counts=... [pipeline options]``
with the runner chosen by the caller:

* locally: ``runner="FnApiRunner"`` (default): Beam's in-process engine, no network needed
  (``beam_jobs.preprocess`` maps the name to the FnApiRunner; ``DirectRunner`` works too but may
  first try to start Prism);
* on Dataflow: ``runner="DataflowRunner"`` with ``dataflow_config`` (project, location, job name,
  service account...) and worker options in ``pipeline_options`` (``temp_location``,
  ``sdk_container_image`` or ``extra_packages``...); the provider submits the job, links it in
  the UI and waits (or defers, with ``deferrable=True``);
* on Flink or Spark: ``runner="FlinkRunner"`` / ``"SparkRunner"`` with ``flink_master`` /
  ``spark_master_url`` and ``environment_type`` in ``pipeline_options`` (see docs/beam.md).

The provider operator returns no shard list (``None``, or the Dataflow job id), so the mapped
generate tasks expand over :class:`PlanShardsOperator`, which reads ``shards/_plan.json``.
Importing this module imports the provider but not ``apache_beam``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.sdk import BaseOperator

from genbatch.stages.preprocess import PIPELINE_MODULE

LOCAL_RUNNER = "FnApiRunner"


def preprocess_operator(
    *,
    run_dir: Any,
    task_id: str = "preprocess",
    runner: str = LOCAL_RUNNER,
    pipeline_options: dict[str, Any] | None = None,
    dataflow_config: Any = None,
    token_counts: str = "auto",
    py_interpreter: str | None = None,
    py_requirements: list[str] | None = None,
    **kwargs: Any,
) -> BeamRunPythonPipelineOperator:
    """The provider's operator running ``beam_jobs.preprocess`` on ``run_dir`` (a string, a
    Jinja template or an XComArg such as ``prepare.output``: ``pipeline_options`` is templated).

    ``pipeline_options`` are Beam options in snake_case (``{"temp_location": "gs://...",
    "direct_num_workers": 2}``); ``dataflow_config`` is the provider's ``DataflowConfiguration`` or
    its dict. ``py_interpreter`` defaults to the interpreter parsing the DAG (the same virtualenv);
    ``py_requirements`` makes the provider build a fresh virtualenv instead (slow; for workers
    without genbatch installed). Other keyword arguments (``retries``, ``deferrable``, ``pool``...)
    go to the operator.
    """
    options: dict[str, Any] = {"run_dir": run_dir, "token_counts": token_counts, **(pipeline_options or {})}
    return BeamRunPythonPipelineOperator(
        task_id=task_id,
        py_file=PIPELINE_MODULE,
        py_options=["-m"],
        runner=runner,
        pipeline_options=options,
        dataflow_config=dataflow_config,
        py_interpreter=py_interpreter or sys.executable,
        py_requirements=py_requirements,
        **kwargs,
    )


class PlanShardsOperator(BaseOperator):
    """Return the shard numbers of the committed plan (``shards/_plan.json``), for ``.expand()``."""

    template_fields: Sequence[str] = ("run_dir",)

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def execute(self, context: Any) -> list[int]:
        from genbatch.stages.preprocess import planned_shards

        return planned_shards(self.run_dir)
