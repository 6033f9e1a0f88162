"""manifest.json and _SUCCESS: how a run commits and how consumers find its outputs.

A run commits only after every shard manifest exists and the quality gate passed:
``manifest.json`` is written first, ``_SUCCESS`` last. Consumers read only through the
manifest, so they never see a partial run. With ``sharding.dedupe_identical``, the fanned-out
ids' copies of their canonical records (:mod:`genbatch.run.fanout`) are written before the manifest,
so its counts and file list include them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.plan import cost
from genbatch.run import fanout
from genbatch.run.layout import RunLayout
from genbatch.run.reconcile import reconcile
from genbatch.run.state import RunRef, RunState, as_run_state

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


def _cost_figures(state: RunState, shard_manifests: list[dict[str, Any]], est_cost_units: Any) -> dict[str, Any]:
    """The run's cost figures from its shard manifests, the plan's estimate and the preflight (if any)."""
    preflight_uri = cost.preflight_uri(state.layout)
    preflight = storage.read_json(preflight_uri) if storage.exists(preflight_uri) else None
    return cost.run_figures(state.spec, shard_manifests, est_cost_units=est_cost_units, preflight=preflight)


def _shard_entries(shard_manifests: list[dict[str, Any]], figures: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``shards`` entry of manifest.json per committed shard: counts, timings, devices and cost."""
    per_shard = {f["shard"]: f for f in figures["shards"]}
    return [{"shard": m["shard"], "generated": m["generated"], "errored": m["errored"], "timings": m["timings"],
             "devices": m.get("devices"), **{k: per_shard[m["shard"]][k] for k in ("device_s", "items_per_device_s", "usd")}}
            for m in shard_manifests]


def _gate_entries(quality: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: g.get(k) for k in ("gate", "value", "passed")} for g in quality.get("gates", [])]


def _throughput(generated: int, compute_s: float) -> float | None:
    return round(generated / compute_s, 3) if compute_s else None


def build_manifest(state: RunState) -> dict[str, Any]:
    """``manifest.json``'s content, refused unless every shard committed, quality passed and counts reconcile."""
    layout = state.layout
    shard_manifests = []
    for shard in range(state.num_shards):
        if not storage.exists(layout.shard_manifest(shard)):
            raise GenbatchError(f"run {state.run_id}: shard {shard} has not committed "
                                f"({layout.shard_manifest(shard)} missing); rerun its generate task")
        shard_manifests.append(storage.read_json(layout.shard_manifest(shard)))
    quality = storage.read_json(layout.quality_summary)
    if not quality.get("publishable", quality["passed"]):
        raise GenbatchError(f"run {state.run_id}: quality gate did not pass; refusing to publish")
    # Fanned-out ids (sharding.dedupe_identical) get their canonical's record before anything counts.
    fanned_out = fanout.materialise(layout)
    counts = reconcile(state)
    if not counts.ok:
        raise GenbatchError(f"run {state.run_id}: counts do not reconcile: {'; '.join(counts.problems)}")
    plan = storage.read_json(layout.shard_plan)
    compute_s = sum(m["timings"]["compute_s"] for m in shard_manifests)
    load_s = sum(m["timings"]["model_load_s"] for m in shard_manifests)
    figures = _cost_figures(state, shard_manifests, plan["est_cost_total"])
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": state.run_id,
        "task": state.spec.task,
        "model": {"name": state.model.name, "version": state.model.version, "uri": state.model.uri},
        "params_hash": state.params_hash,
        "counts": counts.counts(),
        **({"fanned_out": fanned_out} if state.spec.sharding.dedupe_identical else {}),
        "shards": _shard_entries(shard_manifests, figures),
        "quality": {"passed": quality["passed"], "metrics": quality["metrics"], "gates": _gate_entries(quality),
                    "override": quality.get("override") if (quality.get("override") or {}).get("applied") else None},
        "timings": {"compute_s": round(compute_s, 3), "model_load_s": round(load_s, 3),
                    "throughput_items_per_compute_s": _throughput(counts.generated, compute_s)},
        # device_seconds: compute + model load (kept for older readers); device_s: wall x devices (billed).
        "cost_estimate": {"device_seconds": round(compute_s + load_s, 3), "makespan_ratio": plan["makespan_ratio"],
                          **{k: v for k, v in figures.items() if k != "shards"}},
        "files": _file_entries(state),
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def publish(run: RunRef) -> dict[str, Any]:
    """Write manifest.json then _SUCCESS; idempotent once committed."""
    state = as_run_state(run)
    layout = state.layout
    if storage.exists(layout.success):
        return dict(storage.read_json(layout.manifest))
    if not storage.exists(layout.manifest):
        storage.write_json(layout.manifest, build_manifest(state))
    manifest = dict(storage.read_json(layout.manifest))
    storage.write_text(layout.success, "")
    return manifest


def published_event(run_dir: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` of the run's publication Asset event: which run to read, and its manifest."""
    return {"run_dir": run_dir, "manifest": RunLayout(run_dir).manifest, "run_id": manifest["run_id"]}


CORE_COUNT_KEYS = ("input", "accepted", "rejected", "generated", "errored", "items_lost", "items_duplicated")


def rewrite_manifest(state: RunState, *, notes: Sequence[tuple[str, dict[str, Any]]] = ()) -> dict[str, Any] | None:
    """Bring a published ``manifest.json`` in line with the run's objects after an in-place rewrite
    (genbatch.ops.erasure, genbatch.ops.retention): counts, shard entries, cost figures, quality verdict and
    every file's bytes and sha256; each of ``notes``, ``(key, entry)``, is appended to the manifest's ``key`` list.

    Overwrites the manifest (the one sanctioned exception to create-only); ``_SUCCESS`` is left as is.
    Returns the new manifest, or None when the run was never published.
    """
    layout = state.layout
    if not storage.exists(layout.manifest):
        return None
    manifest = dict(storage.read_json(layout.manifest))
    shard_manifests = [storage.read_json(layout.shard_manifest(s)) for s in range(state.num_shards)
                       if storage.exists(layout.shard_manifest(s))]
    counts = reconcile(state)
    manifest["counts"] = {**(manifest.get("counts") or {}), **{k: getattr(counts, k) for k in CORE_COUNT_KEYS}}
    plan = storage.read_json(layout.shard_plan) if storage.exists(layout.shard_plan) else {}
    figures = _cost_figures(state, shard_manifests, plan.get("est_cost_total"))
    old_shards = {e.get("shard"): e for e in manifest.get("shards") or []}
    manifest["shards"] = [{**old_shards.get(e["shard"], {}), **e} for e in _shard_entries(shard_manifests, figures)]
    manifest["cost_estimate"] = {**(manifest.get("cost_estimate") or {}),
                                 **{k: v for k, v in figures.items() if k != "shards"}}
    compute_s = sum(m["timings"]["compute_s"] for m in shard_manifests)
    if isinstance(manifest.get("timings"), dict) and compute_s:
        manifest["timings"] = {**manifest["timings"], "throughput_items_per_compute_s": _throughput(counts.generated, compute_s)}
    if storage.exists(layout.quality_summary) and isinstance(manifest.get("quality"), dict):
        quality = storage.read_json(layout.quality_summary)
        manifest["quality"] = {**manifest["quality"], "passed": quality["passed"], "metrics": quality["metrics"],
                               "gates": _gate_entries(quality)}
    for key, entry in notes:
        manifest[key] = [*(manifest.get(key) or []), entry]
    manifest["files"] = _file_entries(state)
    manifest["rewritten_at"] = dt.datetime.now(dt.UTC).isoformat()
    storage.write_json(layout.manifest, manifest, overwrite=True)
    return manifest
