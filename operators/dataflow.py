"""Reattach instead of resubmit: a retried preprocess task waits for its run's active Dataflow job.

The apache-beam provider's Python operator ignores ``DataflowConfiguration.check_if_running`` (only its
Java operator reads it) and would submit a second job on every retry. The job name is a function of
the run dir (:func:`genbatch.stages.beam_launch.dataflow_job_name`), so before submitting, this module
lists the project's *active* jobs in the region and, when one has exactly that name, waits for it:
deferred on the google provider's ``DataflowJobStateCompleteTrigger`` (resuming the task's
``execute_complete``), or polling with ``DataflowHook.wait_for_done``. Should two submissions race
anyway, Dataflow refuses the second active job of one name. Imported only when a spec asks for Dataflow.
"""

from __future__ import annotations

from typing import Any


def active_job(dataflow: Any, *, name: str, project_id: str, location: str, num_retries: int = 5) -> dict[str, Any] | None:
    """The active Dataflow job named exactly ``name`` (the API's ``filter=ACTIVE`` listing, every page), or None.

    ``dataflow`` is the Dataflow API client (``DataflowHook.get_conn()``)."""
    jobs = dataflow.projects().locations().jobs()
    request = jobs.list(projectId=project_id, location=location, filter="ACTIVE")
    while request is not None:
        response = request.execute(num_retries=num_retries)
        for job in response.get("jobs") or []:
            if job.get("name") == name:
                return dict(job)
        request = jobs.list_next(previous_request=request, previous_response=response)
    return None


def wait_for_active_job(task: Any, operator: Any, context: Any) -> bool:
    """Wait for (or defer on) the active job of ``operator``'s name; False when there is none to wait for."""
    from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

    config = operator.dataflow_config
    hook = DataflowHook(gcp_conn_id=config.gcp_conn_id, poll_sleep=config.poll_sleep,
                        impersonation_chain=config.impersonation_chain, wait_until_finished=True)
    job = active_job(hook.get_conn(), name=config.job_name, project_id=config.project_id, location=config.location,
                     num_retries=hook.num_retries)
    if job is None:
        return False
    task.log.info("Dataflow job %s (%s) of this run is still %s: waiting for it instead of submitting another",
                  job["name"], job["id"], job.get("currentState"))
    context["ti"].xcom_push(key="dataflow_job_id", value=job["id"])
    if operator.deferrable:
        from airflow.providers.google.cloud.triggers.dataflow import DataflowJobStateCompleteTrigger

        task.defer(trigger=DataflowJobStateCompleteTrigger(
            job_id=job["id"], project_id=config.project_id, location=config.location, wait_until_finished=True,
            gcp_conn_id=config.gcp_conn_id, poll_sleep=config.poll_sleep,
            impersonation_chain=config.impersonation_chain,
        ), method_name="execute_complete")
    hook.wait_for_done(job_name=config.job_name, location=config.location, project_id=config.project_id,
                       job_id=job["id"])
    return True
