"""The model jobs' pods (a promotion arm's evaluation, an optimisation build), built by the provider's own
method through the same pod builder as the shard workers, validated against the Kubernetes OpenAPI schema.

No cluster runs here: building a pod needs none (dry_run skips the in-cluster probe).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest

from genbatch.stages.model_jobs import build_variant_command, evaluate_arm_command
from models.model_jobs import evaluation_result_uri, evaluation_run_id, variant_result_uri
from models.promotion import write_policy
from tests.unit.test_pod_spec import K8S_SPEC, K8S_VERSION

AIRFLOW_RUN_ID = "manual__2026-12-06T10:00:00+00:00"


def _context(task_id: str, params: dict[str, Any]) -> dict[str, Any]:
    # Stand-in for the task-instance context Airflow gives a running task (no scheduler runs here): the
    # provider reads dag_id, task_id, map_index and try_number from it for the pod's tracking labels.
    ti = SimpleNamespace(dag_id="model_dag", task_id=task_id, map_index=-1, try_number=1)
    return {"ti": ti, "run_id": AIRFLOW_RUN_ID, "dag": SimpleNamespace(), "params": params}


@pytest.fixture(autouse=True)
def _no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes", "extra": {"in_cluster": false}}')


def _body(op: Any, context: dict[str, Any]) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    assert op.reattach_on_restart and op.deferrable and op.get_logs and op.do_xcom_push
    body: dict[str, Any] = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(context, dry_run=True))
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    return body


def _assert_worker_pod(body: dict[str, Any], command: list[str]) -> None:
    """What every genbatch worker pod carries: the worker image and command, GPUs, the locked-down security context."""
    spec = body["spec"]
    worker = next(c for c in spec["containers"] if c["name"] == "base")
    assert worker["image"] == K8S_SPEC["image"]
    assert [*worker["command"], *worker["args"]] == command
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    sc = worker["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["serviceAccountName"] == "genbatch-worker"
    env = {e["name"]: e for e in worker["env"]}
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "genbatch-secrets", "key": "hf-token"}}
    assert env["GENBATCH_XCOM_RETURN"]["value"] == "/airflow/xcom/return.json"
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])
    assert body["metadata"]["labels"]["app.kubernetes.io/name"] == "genbatch-worker"


def test_an_evaluation_pod_follows_the_policy_spec(tmp_path: Path) -> None:
    from operators.promotion_operators import EvaluateVersionOperator

    registry = str(tmp_path / "registry")
    write_policy(registry, "catalog-copy", {"golden_set": "gs://b/golden.jsonl",
                                            "spec": {"task": "text", "execution": K8S_SPEC, "cost": {"spot": True}}})
    versions = {"production": 1, "candidate": 4, "registry": registry, "model": "catalog-copy"}
    op = EvaluateVersionOperator(task_id="evaluate_candidate", arm="candidate", versions=versions)
    body = _body(op, _context("evaluate_candidate", {}))
    run_id = evaluation_run_id(AIRFLOW_RUN_ID, "candidate", 4)
    _assert_worker_pod(body, evaluate_arm_command(registry, "catalog-copy", 4, run_id,
                                                  evaluation_result_uri(registry, "catalog-copy", run_id)))
    labels = body["metadata"]["labels"]
    assert labels["genbatch/job"] == "evaluate-arm" and labels["genbatch/model-version"] == "4"
    assert labels["genbatch/run-id"] == run_id == "manual__2026-12-06T10-00-00-00-00-candidate-v4"
    assert body["spec"]["nodeSelector"]["cloud.google.com/gke-spot"] == "true"  # the policy spec's cost.spot


def test_an_optimisation_pod_follows_the_execution_param(tmp_path: Path) -> None:
    from operators.optimization_operators import OptimizeVersionOperator

    registry = str(tmp_path / "registry")
    params = {"registry": registry, "model": "catalog-copy", "version": 2, "set_candidate_alias": True,
              "execution": K8S_SPEC}
    op = OptimizeVersionOperator(task_id="optimize", method="int8")
    body = _body(op, _context("optimize", params))
    _assert_worker_pod(body, build_variant_command(
        registry, "catalog-copy", 2, "int8", variant_result_uri(registry, "catalog-copy", AIRFLOW_RUN_ID, "int8"),
        set_candidate_alias=True))
    assert body["metadata"]["labels"]["genbatch/job"] == "build-variant"
    assert "cloud.google.com/gke-spot" not in body["spec"]["nodeSelector"]


def test_a_kubernetes_job_without_an_image_fails_before_any_pod(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.optimization_operators import OptimizeVersionOperator

    params = {"registry": str(tmp_path), "model": "m", "version": 1, "execution": {"backend": "kubernetes"}}
    with pytest.raises(AirflowFailException, match="execution.image is required for the kubernetes backend"):
        OptimizeVersionOperator(task_id="optimize", method="int8").build_pod_request_obj(
            _context("optimize", params), dry_run=True)
