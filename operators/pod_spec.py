"""The Kubernetes settings of a worker pod (one shard's, or a model job's), derived from the execution spec.

Kept apart from the operator so it reads as one list of settings; the operator applies
them before the provider builds the pod, so tests can validate the provider's own pod.
"""

from __future__ import annotations

from typing import Any

from genbatch.run.spec import ExecutionSpec
from genbatch.run.state import RunState
from genbatch.stages.generate import worker_command

XCOM_RETURN = "/airflow/xcom/return.json"
MODEL_CACHE = "/var/cache/genbatch"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# GKE labels spot nodes with this and, on pools created with the matching taint, repels other pods.
GKE_SPOT_LABEL = "cloud.google.com/gke-spot"


def _label_value(value: str) -> str:
    """Kubernetes label values: ≤ 63 chars of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in value)[:63]
    return cleaned.strip("._-") or "none"


def pod_settings(state: RunState, shard: int) -> dict[str, Any]:
    """KubernetesPodOperator attributes for one shard (kubernetes client model objects)."""
    labels = {
        "genbatch/run-id": _label_value(state.run_id),
        "genbatch/shard": str(shard),
        "genbatch/model": _label_value(state.model.name),
        "genbatch/model-version": str(state.model.version),
    }
    return job_pod_settings(state.spec.execution, worker_command(state.layout.root, shard), labels,
                            spot=state.spec.cost.spot)


def model_job_labels(job: str, model: str, version: int, run_id: str) -> dict[str, str]:
    """The labels of a model job's pod (``evaluate-arm``, ``build-variant``): what, which model, which run."""
    return {"genbatch/job": _label_value(job), "genbatch/run-id": _label_value(run_id),
            "genbatch/model": _label_value(model), "genbatch/model-version": str(int(version))}


def stage_job_settings(state: RunState, stage: str) -> tuple[ExecutionSpec, dict[str, str]]:
    """A stage job's pod (quality_gate, publish of a large run): the run's execution settings without GPUs
    (it reads files; it runs no model), labelled with the stage and the run."""
    ex = state.spec.execution.model_copy(update={"gpus_per_pod": 0, "gpu_type": None})
    labels = {"genbatch/job": _label_value(stage.replace("_", "-")), "genbatch/run-id": _label_value(state.run_id),
              "genbatch/model": _label_value(state.model.name)}
    return ex, labels


def job_pod_settings(ex: ExecutionSpec, command: list[str], labels: dict[str, str], *,
                     spot: bool = False) -> dict[str, Any]:
    """KubernetesPodOperator attributes for any worker-contract command: one pod builder, one security context.

    Shard workers and the model jobs (evaluation, optimisation) all get the same image, resources,
    GPU scheduling, non-root read-only security context, Secret-only env and empty-dir volumes.
    """
    from kubernetes.client import models as k8s

    limits = {"cpu": ex.cpu, "memory": ex.memory, "ephemeral-storage": ex.ephemeral_storage}
    if ex.gpus_per_pod:
        limits["nvidia.com/gpu"] = str(ex.gpus_per_pod)
    requests = {k: v for k, v in limits.items() if k != "nvidia.com/gpu"}
    tolerations = []
    node_selector: dict[str, str] = {}
    if ex.gpus_per_pod:
        tolerations.append(k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"))
        if ex.gpu_type:
            node_selector[GKE_ACCELERATOR_LABEL] = ex.gpu_type
    if spot:
        # Priced at spot rates, so it must run on spot capacity: a preempted pod is retried and the
        # worker resumes from its committed parts (at most one batch redone).
        node_selector[GKE_SPOT_LABEL] = "true"
        tolerations.append(k8s.V1Toleration(key=GKE_SPOT_LABEL, operator="Equal", value="true", effect="NoSchedule"))
    env = [k8s.V1EnvVar(name="GENBATCH_XCOM_RETURN", value=XCOM_RETURN),
           k8s.V1EnvVar(name="HOME", value="/tmp"),
           k8s.V1EnvVar(name="GENBATCH_MODEL_CACHE", value=MODEL_CACHE),
           k8s.V1EnvVar(name="HF_HUB_OFFLINE", value="1"),
           k8s.V1EnvVar(name="GENBATCH_LOG_FORMAT", value="json")]  # one JSON object per line (genbatch.ops.logs)
    for name, ref in sorted(ex.secret_env.items()):
        secret, key = ref.split("/", 1)
        env.append(k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name=secret, key=key))))
    return {
        "image": ex.image,
        "cmds": command[:1],
        "arguments": command[1:],
        "namespace": ex.namespace,
        "service_account_name": ex.service_account,
        "labels": {"app.kubernetes.io/name": "genbatch-worker", **labels},
        "container_resources": k8s.V1ResourceRequirements(limits=limits, requests=requests),
        "node_selector": node_selector,
        "tolerations": tolerations,
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=65532, run_as_group=65532, fs_group=65532,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        "container_security_context": k8s.V1SecurityContext(
            run_as_non_root=True, read_only_root_filesystem=True, allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]), seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        "env_vars": env,
        "volumes": [
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="2Gi")),
            k8s.V1Volume(name="model-cache", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=ex.ephemeral_storage)),
        ],
        "volume_mounts": [
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
            k8s.V1VolumeMount(name="model-cache", mount_path=MODEL_CACHE),
        ],
        "active_deadline_seconds": ex.active_deadline_s,
        "priority_class_name": ex.priority_class,
    }
