"""The ``preprocess`` section of a RunSpec: where the Beam preprocess job runs.

``inline`` (the default) runs ``python -m beam_jobs.preprocess`` as a subprocess of the Airflow task
on Beam's FnApiRunner with a few local workers; ``dataflow``, ``flink`` and ``spark`` submit the same
job to a cluster through the apache-beam provider. The Airflow process never imports Beam either way
(DESIGN §1 "Production path"). Every option here becomes a Beam pipeline option or a setting of the
provider's ``DataflowConfiguration``; the checks below refuse, before any task runs, what a cluster
would refuse minutes later (a local temp location on Dataflow, a Flink runner without a master...).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RUNNERS = ("inline", "dataflow", "flink", "spark")
GCS = "gs://"
# Dataflow (and GCE) label rules: keys start with a lowercase letter, both at most 63 characters of
# lowercase letters, digits, '-' and '_' (https://cloud.google.com/compute/docs/labeling-resources).
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_USER_LABELS = 48  # GCP allows 64 per resource; genbatch adds its own few
_DATAFLOW_ONLY = ("project", "region", "temp_location", "staging_location", "machine_type", "max_workers",
                  "service_account", "network", "subnetwork", "use_public_ips", "kms_key", "extra_packages")


class PreprocessSpec(BaseModel):
    """Where the Beam preprocess job runs: inline (a local subprocess) or on Dataflow, Flink or Spark."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    runner: Literal["inline", "dataflow", "flink", "spark"] = Field(
        "inline", description="inline: a subprocess of the Airflow task on Beam's FnApiRunner (local runs); "
        "dataflow / flink / spark: the same job submitted to that cluster (see docs/beam.md)",
    )
    inline_workers: int = Field(
        1, ge=1, le=64, description="inline: Beam worker processes (direct_num_workers, multi_processing mode); 1 "
        "(default) runs the job in the subprocess itself, which spares small runs the workers' start-up"
    )
    project: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", description="dataflow: the Google Cloud project id"
    )
    region: str | None = Field(
        None, pattern=r"^[a-z]+-[a-z]+[0-9]+$", description="dataflow: the regional endpoint, e.g. europe-west4"
    )
    temp_location: str | None = Field(None, description="dataflow: gs:// prefix for Dataflow's temp files")
    staging_location: str | None = Field(
        None, description="dataflow: gs:// prefix for staged packages (default: under temp_location)"
    )
    sdk_container_image: str | None = Field(
        None, description="the Beam worker image with genbatch, transformers and tokenizers installed "
        "(dataflow: --sdk_container_image; flink/spark: the DOCKER environment's image)",
    )
    extra_packages: list[str] = Field(
        default_factory=list, description="dataflow: wheels staged to the workers instead of (or on top of) "
        "a container image, e.g. the genbatch wheel (workers install them at start-up: slow)",
    )
    machine_type: str | None = Field(None, pattern=r"^[a-z0-9-]+$", description="dataflow: worker machine type")
    max_workers: int | None = Field(None, ge=1, le=4000, description="dataflow: autoscaling ceiling (max_num_workers)")
    service_account: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{4,29}@[a-z0-9.-]+\.iam\.gserviceaccount\.com$",
        description="dataflow: the workers' service account (e-mail)",
    )
    network: str | None = Field(None, description="dataflow: VPC network of the workers")
    subnetwork: str | None = Field(None, description="dataflow: subnetwork (regions/REGION/subnetworks/NAME or a URL)")
    use_public_ips: bool | None = Field(None, description="dataflow: false keeps workers on private IPs")
    kms_key: str | None = Field(
        None, pattern=r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$",
        description="dataflow: CMEK for Dataflow's own state (dataflow_kms_key)",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="dataflow: extra job labels (GCP label rules); genbatch adds run id and spec"
    )
    flink_master: str | None = Field(None, description="flink: host:port of the Flink REST endpoint, or [local]")
    spark_master_url: str | None = Field(None, description="spark: spark://HOST:7077, or local[N]")
    environment_type: Literal["DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK"] | None = Field(
        None, description="flink/spark: how the cluster runs the Python workers (default DOCKER with "
        "sdk_container_image, else LOOPBACK)",
    )
    deferrable: bool = Field(True, description="dataflow: wait for the job in the triggerer, not in a worker slot")
    gcp_conn_id: str = Field("google_cloud_default", description="dataflow: the Airflow connection to Google Cloud")

    @model_validator(mode="after")
    def _fits_the_runner(self) -> PreprocessSpec:
        problems = _label_problems(self.labels)
        if self.runner != "dataflow":
            problems += [f"preprocess.{name} is a dataflow setting; remove it or set preprocess.runner: dataflow"
                         for name in _DATAFLOW_ONLY if getattr(self, name) not in (None, [])]
        if self.runner == "dataflow":
            problems += _dataflow_problems(self)
        if self.flink_master is not None and self.runner != "flink":
            problems.append("preprocess.flink_master is only used with preprocess.runner: flink")
        if self.spark_master_url is not None and self.runner != "spark":
            problems.append("preprocess.spark_master_url is only used with preprocess.runner: spark")
        if self.runner == "flink" and not self.flink_master:
            problems.append("preprocess.flink_master is required with runner flink (e.g. flink-jobmanager:8081)")
        if self.runner == "spark" and not self.spark_master_url:
            problems.append("preprocess.spark_master_url is required with runner spark (e.g. spark://spark-master:7077)")
        if self.runner in ("flink", "spark") and self.environment_type == "DOCKER" and not self.sdk_container_image:
            problems.append("preprocess.sdk_container_image is required with environment_type DOCKER")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _dataflow_problems(spec: PreprocessSpec) -> list[str]:
    problems = [f"preprocess.{name} is required with runner dataflow" for name in ("project", "region", "temp_location")
                if getattr(spec, name) is None]
    for name in ("temp_location", "staging_location"):
        value = getattr(spec, name)
        if value is not None and not value.startswith(GCS):
            problems.append(f"preprocess.{name} must be a gs:// URI on Dataflow (got {value!r}): the service and "
                            "its workers cannot see this machine's disk")
    if not spec.sdk_container_image and not spec.extra_packages:
        problems.append("preprocess.sdk_container_image (or extra_packages) is required with runner dataflow: the "
                        "workers need genbatch, transformers and tokenizers (see docs/beam.md)")
    if spec.environment_type is not None:
        problems.append("preprocess.environment_type is for flink/spark; Dataflow uses sdk_container_image")
    return problems


def _label_problems(labels: dict[str, str]) -> list[str]:
    problems = [f"preprocess.labels: {key!r}: {value!r} breaks the GCP label rules (key: a lowercase letter then up "
                "to 62 of a-z 0-9 - _; value: up to 63 of those)"
                for key, value in labels.items()
                if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value)]
    if any(key.startswith("genbatch") for key in labels):
        problems.append("preprocess.labels: keys starting with 'genbatch' are set by genbatch itself")
    if len(labels) > MAX_USER_LABELS:
        problems.append(f"preprocess.labels: at most {MAX_USER_LABELS} labels")
    return problems
