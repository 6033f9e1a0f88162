"""manifest.json and _SUCCESS: how a run commits and how consumers find its outputs.

A run commits only after every shard manifest exists and the quality gate passed:
``manifest.json`` is written first, ``_SUCCESS`` last. Consumers read only through the
manifest, so they never see a partial run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from genbatch import storage
from genbatch.errors import GenbatchError
from genbatch.reconcile import reconcile
from genbatch.run_state import RunState, load_run_state

SCHEMA_VERSION = 1


def _file_entries(state: RunState) -> list[dict[str, Any]]:
    skip = {state.layout.manifest, state.layout.success}
    entries = []
    for uri in storage.list_uris(state.layout.root):
        if uri in skip:
            continue
        data = storage.read_bytes(uri)
        entries.append({"path": uri[len(state.layout.root):].lstrip("/"), "bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    return entries


def build_manifest(state: RunState) -> dict[str, Any]:
    layout = state.layout
    shard_manifests = []
    for shard in range(state.num_shards):
        if not storage.exists(layout.shard_manifest(shard)):
            raise GenbatchError(f"run {state.run_id}: shard {shard} has not committed "
                                f"({layout.shard_manifest(shard)} missing); rerun its generate task")
        shard_manifests.append(storage.read_json(layout.shard_manifest(shard)))
    counts = reconcile(layout.root)
    if not counts.ok:
        raise GenbatchError(f"run {state.run_id}: counts do not reconcile: {'; '.join(counts.problems)}")
    quality = storage.read_json(layout.quality_summary)
    if not quality.get("publishable", quality["passed"]):
        raise GenbatchError(f"run {state.run_id}: quality gate did not pass; refusing to publish")
    plan = storage.read_json(layout.shard_plan)
    compute_s = sum(m["timings"]["compute_s"] for m in shard_manifests)
    load_s = sum(m["timings"]["model_load_s"] for m in shard_manifests)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": state.run_id,
        "task": state.spec.task,
        "model": {"name": state.model.name, "version": state.model.version, "uri": state.model.uri},
        "params_hash": state.params_hash,
        "counts": {k: v for k, v in counts.to_json().items() if k not in {"problems", "ok"}},
        "shards": [{"shard": m["shard"], "generated": m["generated"], "errored": m["errored"],
                    "timings": m["timings"]} for m in shard_manifests],
        "quality": {"passed": quality["passed"], "metrics": quality["metrics"],
                    "gates": [{k: g.get(k) for k in ("gate", "value", "passed")} for g in quality.get("gates", [])],
                    "override": quality.get("override") if (quality.get("override") or {}).get("applied") else None},
        "timings": {"compute_s": round(compute_s, 3), "model_load_s": round(load_s, 3),
                    "throughput_items_per_compute_s": round(counts.generated / compute_s, 3) if compute_s else None},
        "cost_estimate": {"est_cost_units": plan["est_cost_total"], "device_seconds": round(compute_s + load_s, 3),
                          "makespan_ratio": plan["makespan_ratio"]},
        "files": _file_entries(state),
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def publish(run_dir: str) -> dict[str, Any]:
    """Write manifest.json then _SUCCESS; idempotent once committed."""
    state = load_run_state(run_dir)
    layout = state.layout
    if storage.exists(layout.success):
        return dict(storage.read_json(layout.manifest))
    if not storage.exists(layout.manifest):
        storage.write_json(layout.manifest, build_manifest(state))
    manifest = dict(storage.read_json(layout.manifest))
    storage.write_text(layout.success, "")
    return manifest
