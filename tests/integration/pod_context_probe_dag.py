"""A DAG that runs the real GenbatchPodOperator, mapped over shards, up to the cluster call.

Used by test_pod_in_task_context.py under ``dag.test()``: the operator's own ``execute`` renders,
builds the pod from the run spec with the real task-instance context, and only
``get_or_create_pod`` (the first call that needs a Kubernetes API server, which cannot run here) is
replaced: it records the pod request and the label selector that ``find_pod`` would send to
reattach, then fails try 1 (so Airflow retries, as after a worker restart) and skips try 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from operators.generate import GenbatchPodOperator

OUT = Path(os.environ["GENBATCH_POD_PROBE_OUT"])


class RecordingPodOperator(GenbatchPodOperator):
    """The real operator; stands in for the API server at the one call that needs it (no cluster here)."""

    def get_or_create_pod(self, pod_request_obj: Any, context: Any) -> Any:
        from kubernetes.client import ApiClient

        ti = context["ti"]
        record = {
            "map_index": ti.map_index, "try_number": ti.try_number, "run_id": context["run_id"],
            "pod": ApiClient().sanitize_for_serialization(pod_request_obj),
            "find_pod_selector": self._build_find_pod_label_selector(context),
        }
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"shard-{ti.map_index}-try-{ti.try_number}.json").write_text(json.dumps(record))
        if ti.try_number == 1:
            raise AirflowException("probe: try 1 ends here, as if the Airflow worker had restarted")
        raise AirflowSkipException("probe: no cluster here")


with DAG("pod_context_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    RecordingPodOperator.partial(task_id="generate_kubernetes", run_dir=os.environ["GENBATCH_POD_PROBE_RUN"],
                                 retries=1, retry_delay=pendulum.duration(seconds=0)).expand(shard=[0, 1])
