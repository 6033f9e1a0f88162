"""manifest.json and _SUCCESS: how a run commits and how consumers find its outputs (docs/output-contract.md).

A run commits only after every shard manifest exists and the quality gate passed:
``manifest.json`` is written first, ``_SUCCESS`` (its sha256 and the contract version) last, and a
``_FAILED`` marker left by an earlier attempt is removed in between. Consumers read only through the
manifest, so they never see a partial run. A published manifest is never edited in place: erasure and
retention write a new generation and keep the old one under ``_manifests/`` (:func:`rewrite_manifest`).
With ``sharding.dedupe_identical``, the fanned-out ids' copies of their canonical records
(:mod:`genbatch.run.fanout`) are written before the manifest, so its counts and file list include them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.plan import cost
from genbatch.run import contract, fanout
from genbatch.run.layout import RunLayout, listed_in_manifest
from genbatch.run.reconcile import reconcile
from genbatch.run.state import RunRef, RunState, as_run_state
from genbatch.stages import openai_export


def _file_entries(state: RunState) -> list[dict[str, Any]]:
    """Every object of the run but the manifest, its earlier generations and the markers, each with its kind
    (genbatch.run.contract). Earlier generations are history, not content: an erasure scrubs the subject from them."""
    entries = []
    for uri in storage.list_uris(state.layout.root):
        rel = state.layout.rel(uri)
        if listed_in_manifest(rel):
            entries.append(contract.file_entry(rel, storage.read_bytes(uri)))
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
    if state.spec.output.format == "openai_batch":  # before the file list: the manifest lists and hashes them
        openai_export.export(state)
    plan = storage.read_json(layout.shard_plan)
    compute_s = sum(m["timings"]["compute_s"] for m in shard_manifests)
    load_s = sum(m["timings"]["model_load_s"] for m in shard_manifests)
    figures = _cost_figures(state, shard_manifests, plan["est_cost_total"])
    return {
        "contract_version": contract.CONTRACT_VERSION,
        "generation": 1,
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
        "published_at": contract.now_iso(),
    }


def _write_success(layout: RunLayout, run_id: str, manifest_data: bytes, *, overwrite: bool = False) -> None:
    """``_SUCCESS`` for ``manifest_data``, the manifest.json bytes as stored (so the sha256 is what consumers read).

    Its bytes derive from the manifest alone, so a retried publish rewrites identical bytes (create-only holds).
    """
    manifest = json.loads(manifest_data)
    stamp = str(manifest.get("rewritten_at") or manifest["published_at"])
    marker = contract.success_marker(run_id, manifest_data, int(manifest.get("generation", 1)), stamp)
    storage.write_json(layout.success, marker, overwrite=overwrite)


def publish(run: RunRef) -> dict[str, Any]:
    """Write manifest.json, remove an earlier attempt's _FAILED, then write _SUCCESS; idempotent once committed."""
    state = as_run_state(run)
    layout = state.layout
    if storage.exists(layout.success):
        return dict(storage.read_json(layout.manifest))
    if not storage.exists(layout.manifest):
        storage.write_json(layout.manifest, build_manifest(state))
    manifest_data = storage.read_bytes(layout.manifest)  # as stored: a retry may find an earlier attempt's
    if storage.exists(layout.failed):
        storage.delete(layout.failed)  # this attempt succeeded: the run is no longer failed
    _write_success(layout, state.run_id, manifest_data)
    return dict(json.loads(manifest_data))


def published_event(run_dir: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``extra`` of the run's publication Asset event: absolute URIs (``gs://`` or ``file://``), so a
    consumer on another machine can read the run, and the counts, so it can check what it read."""
    layout = RunLayout(storage.absolute_uri(run_dir))
    return {"run_id": manifest["run_id"], "contract_version": contract.CONTRACT_VERSION, "run_uri": layout.root,
            "manifest_uri": layout.manifest, "success_uri": layout.success, "counts": dict(manifest["counts"])}


CORE_COUNT_KEYS = ("input", "accepted", "rejected", "generated", "errored", "items_lost", "items_duplicated")


def rewrite_manifest(state: RunState, *, notes: Sequence[tuple[str, dict[str, Any]]] = (),
                     new_generation: bool = True) -> dict[str, Any] | None:
    """Write the next generation of a published ``manifest.json`` after an in-place rewrite of its objects
    (genbatch.ops.erasure, genbatch.ops.retention): counts, shard entries, cost figures, quality verdict and
    every file's bytes and sha256; each of ``notes``, ``(key, entry)``, is appended to the manifest's ``key`` list.

    The old generation is kept first (create-only, ``_manifests/manifest-gNNNNN.json``) and named in the new
    one's ``previous``; then manifest.json is overwritten (the one sanctioned exception to create-only) and
    ``_SUCCESS`` rewritten to vouch for it. A consumer holding the old manifest sees the sha256 in ``_SUCCESS``
    change. ``new_generation=False``: a later step of the same operation, which rewrites the generation it
    wrote in place (one erasure or retention pass, one generation). Returns the new manifest, or None when
    the run was never published.
    """
    layout = state.layout
    if not storage.exists(layout.manifest):
        return None
    old_data = storage.read_bytes(layout.manifest)
    manifest = dict(storage.read_json(layout.manifest))
    generation = int(manifest.get("generation", 1))
    if new_generation:
        kept = layout.manifest_generation(generation)
        if not storage.exists(kept):  # a rewrite interrupted after this step finds it kept
            storage.write_bytes(kept, old_data, content_type="application/json")
        manifest["generation"] = generation + 1
        manifest["previous"] = {"generation": generation, "path": layout.rel(kept),
                                "sha256": hashlib.sha256(old_data).hexdigest()}
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
    manifest["rewritten_at"] = contract.now_iso()
    storage.write_json(layout.manifest, manifest, overwrite=True)
    if storage.exists(layout.success):
        _write_success(layout, state.run_id, storage.dumps_json(manifest).encode("utf-8"), overwrite=True)
    return manifest
