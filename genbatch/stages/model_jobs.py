"""The model jobs' worker contract: evaluate one promotion arm, build one optimisation variant.

Both need torch (and Beam, for an evaluation run), so they never run in the Airflow process: the
task runs the command built here as a local subprocess (:func:`run_model_job`) or as the command of
a pod, exactly like the shard worker (:mod:`genbatch.stages.generate`). The command writes its JSON
result create-only to ``--result`` and prints it as its last stdout line; exit 2 is a permanent
failure (bad input or spec), any other non-zero exit is retryable.
"""

from __future__ import annotations

import sys
from typing import Any

from genbatch.stages.generate import run_logged_command

EVALUATE_ARM = "evaluate-arm"
BUILD_VARIANT = "build-variant"


def evaluate_arm_command(registry: str, model: str, version: int, run_id: str, result_uri: str) -> list[str]:
    """``genbatch model evaluate-arm``: one version on the model's golden set, through the batch pipeline."""
    return ["genbatch", "model", "--registry", registry, EVALUATE_ARM, model, str(int(version)),
            "--run-id", run_id, "--result", result_uri]


def build_variant_command(registry: str, model: str, version: int, method: str, result_uri: str, *,
                          set_candidate_alias: bool = False) -> list[str]:
    """``genbatch model build-variant``: ``method`` of ``model@version``, registered as the next version."""
    return ["genbatch", "model", "--registry", registry, BUILD_VARIANT, model, str(int(version)), method,
            "--result", result_uri, *(["--candidate"] if set_candidate_alias else [])]


def run_model_job(command: list[str], what: str, timeout_s: float | None = None) -> dict[str, Any]:
    """Run a model job command with this interpreter, its log in ours; returns its JSON result.

    Raises :class:`genbatch.stages.generate.WorkerFailed` (``permanent`` when it exited 2).
    """
    local = [sys.executable, "-m", "genbatch", *command[1:]]  # the same CLI the pod runs, with this interpreter
    return run_logged_command(local, what, f"{what}:", timeout_s=timeout_s)
