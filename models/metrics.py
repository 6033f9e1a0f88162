"""Prometheus metrics of one worker, written in text format to the run dir and optionally pushed.

A batch job has no scrape endpoint that lives long enough, so the worker writes
``outputs/shard-K/metrics-rR.prom`` and, when ``GENBATCH_PUSHGATEWAY`` is set, pushes the same
registry to that Pushgateway (grouped by run id, shard and rank): every
``GENBATCH_PUSH_INTERVAL_S`` seconds while it runs (default 15, so a dashboard follows a long
shard) and once more at the end.

The names (the Grafana dashboard in docker/monitoring/ uses only these; a test checks it):
``genbatch_items_total{status}``, ``genbatch_generated_units_total``,
``genbatch_batch_latency_seconds`` (histogram), ``genbatch_batch_size``,
``genbatch_device_memory_peak_bytes`` and ``genbatch_last_batch_timestamp_seconds``, each labelled
``run_id``, ``shard``, ``rank``, ``device``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, push_to_gateway

from genbatch.io import storage

log = logging.getLogger(__name__)

BATCH_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PUSH_INTERVAL_ENV = "GENBATCH_PUSH_INTERVAL_S"


class WorkerMetrics:
    def __init__(self, run_id: str, shard: int, rank: int, device: str) -> None:
        self.labels = {"run_id": run_id, "shard": str(shard), "rank": str(rank), "device": device}
        self.registry = CollectorRegistry()
        names = list(self.labels)
        self.items = Counter("genbatch_items", "Items finished by the worker", [*names, "status"], registry=self.registry)
        self.units = Counter("genbatch_generated_units", "Tokens (text) or images generated", names, registry=self.registry)
        self.batch_latency = Histogram("genbatch_batch_latency_seconds", "Wall time of one generate call", names,
                                       buckets=BATCH_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Gauge("genbatch_batch_size", "Current batch size", names, registry=self.registry)
        self.device_memory = Gauge("genbatch_device_memory_peak_bytes", "Peak device memory (CUDA) or RSS (CPU)", names,
                                   registry=self.registry)
        self.last_batch = Gauge("genbatch_last_batch_timestamp_seconds", "Unix time the last batch committed", names,
                                registry=self.registry)
        self.gateway = os.environ.get("GENBATCH_PUSHGATEWAY")
        self.push_interval_s = float(os.environ.get(PUSH_INTERVAL_ENV, "15"))
        self.last_push = time.monotonic()

    def observe_batch(self, size: int, seconds: float, ok: int, errors: int, units: int) -> None:
        self.items.labels(**self.labels, status="generated").inc(ok)
        self.items.labels(**self.labels, status="errored").inc(errors)
        self.units.labels(**self.labels).inc(units)
        self.batch_latency.labels(**self.labels).observe(seconds)
        self.batch_size.labels(**self.labels).set(size)
        self.device_memory.labels(**self.labels).set(peak_memory_bytes(self.labels["device"]))
        self.last_batch.labels(**self.labels).set_to_current_time()
        if self.gateway and time.monotonic() - self.last_push >= self.push_interval_s:
            self.push()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def publish(self, uri: str) -> None:
        storage.write_bytes(uri, self.text(), overwrite=True, content_type="text/plain; version=0.0.4")
        if self.gateway:
            self.push()

    def push(self) -> None:
        """Replace this worker's group on the Pushgateway; a failure is logged, never raised."""
        assert self.gateway is not None
        self.last_push = time.monotonic()
        try:
            push_to_gateway(self.gateway, job="genbatch_worker", registry=self.registry,
                            grouping_key={k: self.labels[k] for k in ("run_id", "shard", "rank")}, timeout=10)
        except OSError as exc:  # metrics must never fail a shard
            log.warning("could not push metrics to %s: %s", self.gateway, exc)


def peak_memory_bytes(device: str) -> float:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated(torch.device(device)))
    # VmHWM is this process's own peak; ru_maxrss carries a forked/spawned parent's peak over.
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return float(int(line.split()[1]) * 1024)
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def metric_value(text: str, name: str, **labels: Any) -> float:
    """Read one sample back from exposition text (used by tests and the run report)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == str(v) for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(f"{name} {labels}")
