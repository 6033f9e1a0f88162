# The generation worker image: CUDA runtime + the `worker` extra from the lock file; never Airflow.
# Build (from the repo root): docker build -f docker/worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/genbatch/worker:TAG .
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && groupadd --gid 65532 genbatch \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin genbatch

WORKDIR /opt/genbatch
COPY pyproject.toml setup.cfg README.md constraints.txt ./
COPY docker/pip-install.sh docker/pip-install.sh
COPY genbatch ./genbatch
COPY models ./models
COPY operators ./operators
COPY beam_jobs ./beam_jobs
# torch==2.13.0 in the lock: pip picks the CUDA wheel on this base image.
RUN docker/pip-install.sh worker

USER 65532:65532
ENTRYPOINT ["genbatch"]
CMD ["worker", "--help"]
