"""The worker pod the KubernetesPodOperator would create, built by the provider's own method,
validated against the Kubernetes OpenAPI schema (kubernetes-validate, pinned version).

No cluster runs here: building a pod needs none (dry_run skips the in-cluster probe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from genbatch.errors import SpecError
from genbatch.run.spec import parse_spec
from genbatch.stages.generate import worker_command
from tests.helpers import prepared_run

K8S_VERSION = "1.33.0"
K8S_SPEC: dict[str, Any] = {
    "backend": "kubernetes",
    "image": "europe-docker.pkg.dev/acme/genbatch/worker:0.1.0",
    "gpus_per_pod": 1,
    "gpu_type": "nvidia-l4",
    "secret_env": {"HF_TOKEN": "genbatch-secrets/hf-token"},
}


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes", "extra": {"in_cluster": false}}')
    from kubernetes.client import ApiClient

    from operators.generate import GenbatchPodOperator

    state = prepared_run(str(tmp_path / "runs"), execution=K8S_SPEC, num_shards=4, run_id="nightly-2026-11-26")
    op = GenbatchPodOperator(task_id="generate_kubernetes", run_dir=state.layout.root, shard=3)
    assert op.reattach_on_restart and op.deferrable and op.get_logs and op.do_xcom_push
    assert str(op.on_finish_action).lower().endswith("delete_pod")
    body: dict[str, Any] = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    body["_root"] = state.layout.root
    return body


def test_pod_validates_against_the_kubernetes_schema(pod: dict[str, Any]) -> None:
    body = {k: v for k, v in pod.items() if k != "_root"}
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)


def test_pod_carries_every_required_setting(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    worker = next(c for c in spec["containers"] if c["name"] == "base")
    assert worker["image"] == K8S_SPEC["image"]
    assert [*worker["command"], *worker["args"]] == worker_command(pod["_root"], 3)
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in requests
    assert requests["cpu"] and requests["memory"] and limits["memory"]
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    sc = worker["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "genbatch-worker"
    env = {e["name"]: e for e in worker["env"]}
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "genbatch-secrets", "key": "hf-token"}}}
    assert all("value" not in e or e["name"] not in K8S_SPEC["secret_env"] for e in worker["env"])
    assert env["GENBATCH_XCOM_RETURN"]["value"] == "/airflow/xcom/return.json"
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert {"/tmp", "/var/cache/genbatch", "/airflow/xcom"} <= mounts
    assert all("emptyDir" in v for v in spec["volumes"])
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert spec["priorityClassName"] == "genbatch-batch"
    assert spec["restartPolicy"] == "Never"
    labels = pod["metadata"]["labels"]
    assert labels["genbatch/run-id"] == "nightly-2026-11-26" and labels["genbatch/shard"] == "3"
    assert labels["genbatch/model-version"] == "1"
    assert pod["metadata"]["namespace"] == "genbatch"
    assert any(c["name"] == "airflow-xcom-sidecar" for c in spec["containers"])


def _spec(**execution: Any) -> dict[str, Any]:
    return {"task": "text", "input": {"uri": "x.jsonl"}, "model": {"name": "m", "version": 1},
            "execution": {"backend": "kubernetes", **execution}}


def test_kubernetes_without_image_fails_before_any_pod() -> None:
    with pytest.raises(SpecError, match="execution.image is required for the kubernetes backend"):
        parse_spec(_spec())


def test_gpu_count_over_the_quota_fails_before_any_pod() -> None:
    with pytest.raises(SpecError, match="gpus_per_pod=4 exceeds the quota of 2 GPUs per pod"):
        parse_spec(_spec(image="w:1", gpus_per_pod=4, gpu_quota_per_pod=2))


def test_more_shards_than_one_mapping_holds_is_refused() -> None:
    with pytest.raises(SpecError, match="max_map_length"):
        parse_spec({**_spec(image="w:1"), "sharding": {"num_shards": 5000}})


def test_secret_env_must_be_a_secret_reference() -> None:
    with pytest.raises(SpecError, match="must map an ENV_NAME to 'secret-name/key'"):
        parse_spec(_spec(image="w:1", secret_env={"TOKEN": "hunter2"}))


def test_spot_runs_are_scheduled_on_spot_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cost.spot prices the run at spot rates, so its pods must land on (and tolerate) spot nodes."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes", "extra": {"in_cluster": false}}')
    from kubernetes.client import ApiClient

    from operators.generate import GenbatchPodOperator

    bodies = {}
    for spot in (False, True):
        state = prepared_run(str(tmp_path / f"runs-{spot}"), execution=K8S_SPEC, num_shards=2, run_id=f"spot-{spot}",
                             cost={"spot": spot})
        op = GenbatchPodOperator(task_id="generate_kubernetes", run_dir=state.layout.root, shard=0)
        bodies[spot] = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
        kubernetes_validate.validate(bodies[spot], K8S_VERSION, strict=True)
    spot_toleration = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert bodies[True]["spec"]["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert spot_toleration in bodies[True]["spec"]["tolerations"]
    assert "cloud.google.com/gke-spot" not in bodies[False]["spec"]["nodeSelector"]
    assert spot_toleration not in bodies[False]["spec"]["tolerations"]
