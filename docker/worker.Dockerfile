# The generation worker image: the `worker` extra only (torch, transformers, diffusers), never Airflow.
# Not built in CI here (no container engine on these machines); issue 6 adds the CUDA base and checks.
FROM python:3.11-slim
WORKDIR /opt/genbatch
COPY pyproject.toml setup.cfg README.md constraints.txt ./
COPY genbatch ./genbatch
COPY models ./models
RUN pip install --no-cache-dir -c constraints.txt ".[worker]"
USER 65532:65532
ENTRYPOINT ["genbatch", "worker"]
