"""Run a worker-contract command as the task: a local process, or a pod on the kubernetes backend.

Model jobs (evaluate a promotion arm, build a variant) and a large run's quality_gate and publish
(:mod:`genbatch.stages.stage_jobs`) all go through here. The Airflow task only builds the command and
waits; torch, Beam, the model and a run's per-item data never load in the Airflow process. The backend
is the job's ``execution.backend``, read when the task runs, and one task serves both: unlike the
generate stage's branch, these are single tasks whose XCom downstream tasks and Asset events read by
task id, so a branch would double the tasks (each Airflow task costs seconds) and make the consumers
pick whichever ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genbatch.run.spec import ExecutionSpec
from operators.worker_pod import WorkerPodOperator


@dataclass(frozen=True)
class WorkerJob:
    """What to run (the worker command), where (its execution settings), and how its pod is labelled."""

    what: str
    command: list[str]
    execution: ExecutionSpec
    labels: dict[str, str] = field(default_factory=dict)
    spot: bool = False


class WorkerJobOperator(WorkerPodOperator):
    """Runs :meth:`worker_job`'s command locally (its log streamed into the task log) or as a pod.

    Locally a permanent failure (exit 2: bad spec, policy or input) fails the task without retries;
    in a pod the provider's own handling applies. Both return the command's JSON result.
    """

    def worker_job(self, context: Any) -> WorkerJob:
        """The job of this task instance; a SpecError here fails the task before anything starts."""
        raise NotImplementedError

    def _job(self, context: Any) -> WorkerJob:
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.errors import SpecError

        try:
            return self.worker_job(context)
        except SpecError as exc:  # a retry reads the same spec: fail now
            raise AirflowFailException(str(exc)) from exc

    def execute(self, context: Any) -> Any:
        job = self._job(context)
        if job.execution.backend == "kubernetes":
            return super().execute(context)
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.stages.generate import WorkerFailed
        from genbatch.stages.model_jobs import run_model_job

        try:
            return run_model_job(job.command, job.what)
        except WorkerFailed as exc:
            if exc.permanent:
                raise AirflowFailException(str(exc)) from exc
            raise

    def pod_settings(self, context: Any) -> dict[str, Any]:
        from operators.pod_spec import job_pod_settings

        job = self._job(context)
        return job_pod_settings(job.execution, job.command, job.labels, spot=job.spot)
