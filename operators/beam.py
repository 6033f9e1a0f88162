"""The preprocess task: ``beam_jobs.preprocess`` through the apache-beam provider, never in this process.

Design (issue 17): **one operator that picks the provider's launch path at execute time**, rather
than a branch between an inline task and a provider task. The runner lives in the spec, which
``batch_generation`` only knows at run time (params → ``prepare_run`` → ``spec.json``), and a branch
would add two tasks, a skipped one on every run and a join before the generate mapping. Here the
task keeps its id, its place and its output (the shard numbers the generate tasks expand over), for
one-off and scheduled runs alike:

* ``inline``, ``flink``, ``spark``: the provider's ``run_beam_command`` runs
  ``python -m beam_jobs.preprocess --runner=... [options]`` as a subprocess and streams its log
  (inline: the FnApiRunner with ``preprocess.inline_workers`` processes). Needs only the apache-beam
  provider, which can build no operator without the google provider, so its hook module is used directly.
* ``dataflow``: the provider's ``BeamRunPythonPipelineOperator`` with a ``DataflowConfiguration``, built
  from the spec in ``execute`` (:func:`dataflow_operator`) and executed in place. It defers to the
  triggerer while the job runs; the trigger's event resumes **this** task's :meth:`execute_complete`
  (a fresh instance after deferral: it needs only ``run_dir``), which checks the event and reads the
  committed plan. The provider's Python operator ignores ``check_if_running`` (Java only), so this
  operator does it: the job name is stable per run dir (:mod:`genbatch.stages.beam_launch`), and a
  retried task that finds an active job of that name waits for it instead of submitting a second.

Every path first looks for ``shards/_plan.json``: the plan is written last, so a committed plan means
the job already finished (a retry after the job succeeded but the task died) and nothing is rerun.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from genbatch.stages.preprocess import PIPELINE_MODULE

GOOGLE_PROVIDER_MISSING = (
    "preprocess.runner is 'dataflow' but apache-airflow-providers-google is not installed in the Airflow "
    "environment: install the `airflow` extra of genbatch (docker/airflow.Dockerfile does), or set "
    "preprocess.runner to inline, flink or spark"
)


class PreprocessOperator(BaseOperator):
    """Run the Beam preprocess job where the spec says (``preprocess.runner``); return the shard numbers."""

    template_fields: Sequence[str] = ("run_dir",)

    def __init__(self, *, run_dir: Any, token_counts: str = "auto", py_interpreter: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir
        self.token_counts = token_counts
        self.py_interpreter = py_interpreter
        self._dataflow: Any = None  # the provider operator of a Dataflow run, for on_kill

    def execute(self, context: Any) -> list[int]:
        from genbatch.run.state import load_run_state
        from genbatch.stages.preprocess import committed_shards

        done = committed_shards(self.run_dir)
        if done is not None:
            self.log.info("shards/_plan.json of %s is committed: the job already ran, nothing is resubmitted",
                          self.run_dir)
            return done
        state = load_run_state(self.run_dir)
        if state.spec.preprocess.runner == "dataflow":
            self._run_on_dataflow(state, context)
        else:
            self._run_launcher(state)
        return self._planned()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[int]:
        """Resumed after the Dataflow trigger fired: fail on its error event, else read the plan."""
        from airflow.sdk.exceptions import AirflowException

        if event.get("status") == "error":
            raise AirflowException(f"Dataflow preprocess job failed: {event.get('message')}")
        self.log.info("Dataflow preprocess job finished: %s", event.get("message"))
        return self._planned()

    def on_kill(self) -> None:
        if self._dataflow is not None:
            self._dataflow.on_kill()  # cancels the Dataflow job it submitted

    # --- paths -----------------------------------------------------------------------------------

    def _interpreter(self) -> str:
        return self.py_interpreter or sys.executable

    def _run_launcher(self, state: Any) -> None:
        from airflow.providers.apache.beam.hooks.beam import beam_options_to_args, run_beam_command
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from genbatch.stages.beam_launch import beam_runner, pipeline_options
        from genbatch.stages.generate import EXIT_PERMANENT

        # The command BeamHook.start_python_pipeline builds, run by the provider's own runner (which
        # streams the job's log), without the hook's `python -c "import apache_beam"` version probe:
        # a second interpreter and Beam import per run (about 1.3 s) for a check that only guards
        # impersonate_service_account, which these runners never get.
        command = [self._interpreter(), "-m", PIPELINE_MODULE, f"--runner={beam_runner(state.spec.preprocess)}",
                   *beam_options_to_args(pipeline_options(state, str(self.run_dir), self.token_counts))]
        try:
            run_beam_command(cmd=command, log=self.log)
        except AirflowException as exc:  # the hook names only the exit code; the job's log above has the reason
            if str(exc).endswith(f"return code {EXIT_PERMANENT}"):
                raise AirflowFailException(
                    "the preprocess job refused the run's input or spec (its last log line above, 'genbatch "
                    "preprocess: error: ...', names the file and the fix); a retry would read the same") from exc
            raise

    def _run_on_dataflow(self, state: Any, context: Any) -> None:
        from operators.dataflow import wait_for_active_job

        self._dataflow = dataflow_operator(state, str(self.run_dir), task_id=self.task_id,
                                           token_counts=self.token_counts, py_interpreter=self._interpreter())
        if wait_for_active_job(self, self._dataflow, context):
            return  # a job of this run was still active and has finished now (or we deferred on it)
        self._dataflow.execute(context)  # submits; defers to execute_complete when deferrable

    def _planned(self) -> list[int]:
        from genbatch.errors import GenbatchError
        from genbatch.stages.preprocess import committed_shards

        shards = committed_shards(self.run_dir)
        if shards is None:
            raise GenbatchError(f"the preprocess job of {self.run_dir} ended without shards/_plan.json; see the "
                                "job's log above (inline) or the Dataflow job's worker logs")
        return shards


def dataflow_operator(state: Any, run_dir: str, *, task_id: str = "preprocess", token_counts: str = "auto",
                      py_interpreter: str | None = None) -> Any:
    """The provider's ``BeamRunPythonPipelineOperator`` for ``runner: dataflow``, built from the spec.

    Raises :class:`genbatch.errors.SpecError` naming the package when the google provider is missing.
    """
    from genbatch.errors import SpecError
    from genbatch.stages.beam_launch import beam_runner, dataflow_configuration, pipeline_options

    try:
        from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
        from airflow.providers.google.cloud.operators.dataflow import CheckJobRunning, DataflowConfiguration
    except ImportError:
        raise SpecError(GOOGLE_PROVIDER_MISSING) from None
    spec = state.spec.preprocess
    config = DataflowConfiguration(**dataflow_configuration(state, run_dir), check_if_running=CheckJobRunning.WaitForRun)
    return BeamRunPythonPipelineOperator(
        task_id=task_id,
        py_file=PIPELINE_MODULE,
        py_options=["-m"],
        runner=beam_runner(spec),
        pipeline_options=pipeline_options(state, run_dir, token_counts),
        dataflow_config=config,
        gcp_conn_id=spec.gcp_conn_id,
        py_interpreter=py_interpreter or sys.executable,
        deferrable=spec.deferrable,
    )
