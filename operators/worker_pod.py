"""The one KubernetesPodOperator every genbatch worker pod goes through: shard workers and model jobs.

Its defaults are the reliability contract of a worker pod (deferrable, reattaches on restart instead of
starting a second GPU pod, deleted on finish with its logs kept, its result returned through the XCom
sidecar); subclasses only say which settings (:mod:`operators.pod_spec`) the pod gets, read when the
pod is built so image, GPUs and namespace come from the run, not from the DAG file.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator


class WorkerPodOperator(KubernetesPodOperator):
    """A worker pod; subclasses return its settings from :meth:`pod_settings`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("deferrable", True)
        kwargs.setdefault("reattach_on_restart", True)
        kwargs.setdefault("on_finish_action", "delete_pod")
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("log_events_on_failure", True)
        kwargs.setdefault("do_xcom_push", True)
        kwargs.setdefault("image", "set-from-the-run-spec")
        super().__init__(**kwargs)

    def pod_settings(self, context: Any) -> dict[str, Any]:
        """KubernetesPodOperator attributes of this pod (``operators.pod_spec``)."""
        raise NotImplementedError

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> Any:
        for name, value in self.pod_settings(context).items():
            setattr(self, name, value)
        return super().build_pod_request_obj(context, dry_run=dry_run)
