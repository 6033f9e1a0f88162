"""The generate stage: one mapped task per shard, on local processes or one pod per shard.

The backend is chosen at run time from the spec (``execution.backend``) by a branch task;
both backends run the same worker command (``genbatch.stages.generate.worker_command``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import BaseOperator

from operators.worker_pod import WorkerPodOperator

DEVICE_POOL = "genbatch_devices"
LOCAL_TASK = "generate_local"
KUBERNETES_TASK = "generate_kubernetes"


class ChooseBackendOperator(BaseBranchOperator):
    """Follow the spec's execution.backend: the other generate task is skipped."""

    template_fields: Sequence[str] = ("run_dir",)

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def choose_branch(self, context: Any) -> str:
        from genbatch.run.state import load_run_state

        backend = load_run_state(self.run_dir).spec.execution.backend
        return KUBERNETES_TASK if backend == "kubernetes" else LOCAL_TASK


class LocalShardOperator(BaseOperator):
    """Runs ``genbatch worker`` for one shard as a subprocess, its log streamed into the task log."""

    template_fields: Sequence[str] = ("run_dir", "shard")

    def __init__(self, *, run_dir: Any, shard: Any, pool: str = DEVICE_POOL, **kwargs: Any) -> None:
        super().__init__(pool=pool, **kwargs)
        self.run_dir = run_dir
        self.shard = shard

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.stages.generate import WorkerFailed, run_worker_process

        try:
            return run_worker_process(self.run_dir, int(self.shard))
        except WorkerFailed as exc:
            if exc.permanent:  # bad input or too many item errors: a retry would fail the same way
                raise AirflowFailException(str(exc)) from exc
            raise


class GenbatchPodOperator(WorkerPodOperator):
    """One pod per shard (deferrable, reattaches on restart, deleted on finish with logs kept).

    The spec is read when the pod is built, so image, GPUs and namespace come from the run.
    """

    template_fields: Sequence[str] = (*WorkerPodOperator.template_fields, "run_dir", "shard")

    def __init__(self, *, run_dir: Any, shard: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.shard = shard

    def pod_settings(self, context: Any) -> dict[str, Any]:
        from genbatch.run.state import load_run_state
        from operators.pod_spec import pod_settings

        return pod_settings(load_run_state(self.run_dir), int(self.shard))
