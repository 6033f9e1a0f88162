"""What the launcher of the Beam preprocess job is given, for the runner the spec names.

The Airflow task runs ``python -m beam_jobs.preprocess`` through the apache-beam provider (a
subprocess; the Airflow process never imports Beam). This module turns a resolved run into the
provider's inputs: the Beam runner name, the pipeline options (snake_case, as the provider passes
them on as ``--name=value``) and, for Dataflow, the ``DataflowConfiguration`` arguments. Pure
functions of the spec, so the job request can be checked without a cluster or a network.

The Dataflow job name is a function of the run directory, never random: a retried task (a worker
restart, a retry after a lost heartbeat) looks for the active job of that name and waits for it
instead of submitting a second one, and Dataflow itself refuses a second active job of one name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from genbatch.run.preprocess_spec import PreprocessSpec
from genbatch.run.state import RunState

BEAM_RUNNERS = {"inline": "FnApiRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner", "spark": "SparkRunner"}
JOB_NAME_PREFIX = "genbatch-preprocess"
MAX_JOB_NAME = 63  # Dataflow allows more, but the name is also a label value and shows in the console


def beam_runner(spec: PreprocessSpec) -> str:
    """The Beam runner name the provider passes as ``--runner``."""
    return BEAM_RUNNERS[spec.runner]


def dataflow_job_name(run_id: str, run_dir: str) -> str:
    """``genbatch-preprocess-<run id slug>-<8 hex of the run dir>``: Dataflow's rules (lowercase letters,
    digits and '-', starting with a letter, ending with a letter or digit), stable across retries, and
    distinct for run ids that slug alike (``Run_1`` and ``run-1``) or share an id under two outputs."""
    digest = hashlib.sha256(run_dir.encode()).hexdigest()[:8]
    room = MAX_JOB_NAME - len(JOB_NAME_PREFIX) - len(digest) - 2
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:room].strip("-")
    return "-".join(part for part in (JOB_NAME_PREFIX, slug, digest) if part)


def _label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower())[:63]


def job_labels(state: RunState) -> dict[str, str]:
    """The spec's labels plus genbatch's own: run id, model and version, spec (params hash), stage."""
    return {
        **state.spec.preprocess.labels,
        "genbatch-run-id": _label_value(state.run_id),
        "genbatch-model": _label_value(state.model.name),
        "genbatch-model-version": str(state.model.version),
        "genbatch-params-hash": _label_value(state.params_hash),
        "genbatch-stage": "preprocess",
    }


def pipeline_options(state: RunState, run_dir: str, token_counts: str = "auto") -> dict[str, Any]:
    """The job's own arguments and the Beam pipeline options for the spec's runner (None values are
    dropped by the provider; ``labels`` becomes ``--labels=k=v`` once per label)."""
    spec = state.spec.preprocess
    options: dict[str, Any] = {"run_dir": run_dir, "token_counts": token_counts}
    if spec.runner == "inline":
        # One worker runs in the launcher's own process (no workers to start: most of a small run's cost);
        # more are local worker processes: real parallelism on a small machine, no network needed.
        mode = "in_memory" if spec.inline_workers == 1 else "multi_processing"
        return {**options, "direct_num_workers": spec.inline_workers, "direct_running_mode": mode}
    if spec.runner == "dataflow":
        return {**options, **_dataflow_options(spec), "labels": job_labels(state),
                # The launcher submits and exits; the provider (or its trigger) waits for the job.
                "no_wait_until_finish": True}
    environment = spec.environment_type or ("DOCKER" if spec.sdk_container_image else "LOOPBACK")
    master = {"flink_master": spec.flink_master} if spec.runner == "flink" else {"spark_master_url": spec.spark_master_url}
    return {**options, **master, "environment_type": environment,
            "environment_config": spec.sdk_container_image if environment == "DOCKER" else None}


def _dataflow_options(spec: PreprocessSpec) -> dict[str, Any]:
    return {
        "temp_location": spec.temp_location,
        "staging_location": spec.staging_location,
        "sdk_container_image": spec.sdk_container_image,
        "extra_package": list(spec.extra_packages) or None,
        "machine_type": spec.machine_type,
        "max_num_workers": spec.max_workers,
        "network": spec.network,
        "subnetwork": spec.subnetwork,
        "use_public_ips": spec.use_public_ips,
        "dataflow_kms_key": spec.kms_key,
    }


def dataflow_configuration(state: RunState, run_dir: str) -> dict[str, Any]:
    """Arguments of the google provider's ``DataflowConfiguration`` for this run: the stable job name
    (no random suffix), project, region, service account; waits for the batch job to finish."""
    spec = state.spec.preprocess
    return {
        "job_name": dataflow_job_name(state.run_id, run_dir),
        "append_job_name": False,
        "project_id": spec.project,
        "location": spec.region,
        "gcp_conn_id": spec.gcp_conn_id,
        "service_account": spec.service_account,
        "wait_until_finished": True,
    }
