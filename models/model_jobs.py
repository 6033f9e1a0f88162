"""The worker side of the model DAGs: evaluate one promotion arm, build one optimisation variant.

    genbatch model [--registry URI] evaluate-arm NAME VERSION --run-id ID --result URI
    genbatch model [--registry URI] build-variant NAME VERSION METHOD --result URI [--candidate]

They import torch (and Beam, for the evaluation's batch pipeline), so the Airflow task never runs them
in its own process: it runs this command as a subprocess or as a pod's command, like the shard worker
(commands built by :mod:`genbatch.stages.model_jobs`). Each writes its JSON result create-only to
``--result`` and prints it as its last stdout line (and to ``$GENBATCH_XCOM_RETURN`` in a pod).

A retry after a lost response finds the result already written and returns it instead of doing the
work again: an optimisation is never registered twice for one task. Exit codes follow the worker:
0 done, 2 permanent (bad input, spec or policy: a retry fails the same way), anything else retryable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.ops import logs
from genbatch.run.spec import sanitize_run_id
from genbatch.stages.stage_jobs import hand_back
from models.registry import model_root

log = logging.getLogger(__name__)

EXIT_PERMANENT = 2  # as the shard worker: genbatch.stages.generate.EXIT_PERMANENT


def evaluation_run_id(airflow_run_id: str, arm: str, version: int) -> str:
    """The run id of one arm's evaluation run (its run dir under ``<model>/evaluations/runs/``)."""
    return sanitize_run_id(f"{airflow_run_id}-{arm}-v{int(version)}")


def evaluation_result_uri(registry: str, model: str, run_id: str) -> str:
    """Where ``evaluate-arm`` writes the evaluation of run ``run_id``."""
    return storage.join(model_root(registry, model), "evaluations", "results", f"{run_id}.json")


def variant_result_uri(registry: str, model: str, airflow_run_id: str, method: str) -> str:
    """Where ``build-variant`` writes what one optimisation task registered."""
    return storage.join(model_root(registry, model), "optimizations", sanitize_run_id(airflow_run_id),
                        f"{method}.json")


def evaluate_arm(registry: str, model: str, version: int, run_id: str) -> dict[str, Any]:
    """``model@version`` on the model's golden set through the batch pipeline, in this process."""
    from models.pipeline_inline import run_pipeline_inline
    from models.promotion import evaluation_spec

    return run_pipeline_inline(evaluation_spec(registry, model, version), run_id)


def build_variant(registry: str, model: str, version: int, method: str, set_candidate_alias: bool) -> dict[str, Any]:
    """One optimisation of ``model@version``, registered as the next version (:mod:`models.optimize.variants`)."""
    from models.optimize.variants import build_variant as build

    return build(registry, model, version, method, set_candidate_alias=set_candidate_alias)


def run_job(result_uri: str, job: Callable[[], dict[str, Any]], name: str) -> int:
    """Run ``job`` unless its result exists; write the result create-only, hand it back, print it last."""
    try:
        if storage.exists(result_uri):
            result = dict(storage.read_json(result_uri))
            log.info("%s: %s already holds the result of an earlier attempt; not redoing it", name, result_uri)
        else:
            result = job()
            storage.write_json(result_uri, result)
    except GenbatchError as exc:
        print(f"genbatch model {name}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_PERMANENT
    hand_back(result)
    return 0


def evaluate_arm_main(registry: str, model: str, version: int, run_id: str, result_uri: str) -> int:
    """``genbatch model evaluate-arm``."""
    logs.configure()
    logs.bind(run_id=run_id)
    return run_job(result_uri, lambda: evaluate_arm(registry, model, version, run_id), "evaluate-arm")


def build_variant_main(registry: str, model: str, version: int, method: str, result_uri: str,
                       set_candidate_alias: bool) -> int:
    """``genbatch model build-variant``."""
    logs.configure()
    return run_job(result_uri, lambda: build_variant(registry, model, version, method, set_candidate_alias),
                   "build-variant")
