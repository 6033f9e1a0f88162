"""Cost accounting: device-seconds and USD per shard and run, the pre-generation cost ceiling, ``genbatch cost``.

Units: device-seconds (a shard's wall time × the devices it held, committing attempt only), cost units (the
preprocess cost model), throughput (cost units one device processes per compute second) and USD (device- and
node-hours × hourly prices, :data:`DEFAULT_PRICES` merged with the spec's ``cost.price_table``).
Nothing here ever fails a run for want of a price (``usd: null`` and a note), except where the spec sets
``cost.ceiling_usd``: then the ceiling check fails closed, before generation.

The units, one definition each: docs/internals.md#genbatchplancost
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run.layout import MANIFEST, RunLayout, find_run_dirs
from genbatch.run.model_ref import read_card_if_any
from genbatch.run.spec import RunSpec

if TYPE_CHECKING:
    from genbatch.run.state import RunRef, RunState

CURRENCY = "USD"

# USD per hour, on-demand and spot. Illustrative Google Cloud list prices (us-central1, 2025); prices
# change and differ by region and contract: override them in the spec (cost.price_table) — see
# https://cloud.google.com/compute/gpus-pricing and https://cloud.google.com/compute/vm-instance-pricing.
# Accelerators are priced per device; "cpu" is one CPU device process (about an n2-standard-4).
# Nodes are the host's share (vCPU + memory) of the node a shard's pod occupies; GPUs are separate.
DEFAULT_PRICES: dict[str, dict[str, dict[str, float]]] = {
    "accelerators": {
        "cpu": {"on_demand": 0.1942, "spot": 0.0470},
        "nvidia-tesla-t4": {"on_demand": 0.35, "spot": 0.14},
        "nvidia-l4": {"on_demand": 0.5603, "spot": 0.2241},
        "nvidia-tesla-v100": {"on_demand": 2.48, "spot": 0.992},
        "nvidia-tesla-a100": {"on_demand": 2.9339, "spot": 1.1736},
        "nvidia-a100-80gb": {"on_demand": 3.9271, "spot": 1.5708},
        "nvidia-h100-80gb": {"on_demand": 11.0613, "spot": 4.4245},
    },
    "nodes": {
        "n1-standard-4": {"on_demand": 0.1900, "spot": 0.0400},
        "n1-standard-8": {"on_demand": 0.3800, "spot": 0.0800},
        "n2-standard-8": {"on_demand": 0.3885, "spot": 0.0940},
        "g2-standard-8": {"on_demand": 0.2940, "spot": 0.1176},
        "g2-standard-16": {"on_demand": 0.4290, "spot": 0.1716},
    },
}

# Cost units per device-second when nothing better is known: deliberately low (a small causal LM decodes
# a few thousand token positions a second on one L4 even at modest batch sizes; one CPU process a few
# hundred; Stable Diffusion 1.5 at 512x512 does ~2.6M pixel-steps a second on an L4).
DEFAULT_THROUGHPUT: dict[tuple[str, str], float] = {
    ("text", "cpu"): 200.0,
    ("text", "gpu"): 2_000.0,
    ("image", "cpu"): 50_000.0,
    ("image", "gpu"): 1_000_000.0,
}
CARD_THROUGHPUT_KEY = "throughput_cost_units_per_s"


class CostCeilingExceeded(GenbatchError):
    """A run's estimated cost is over its spec's cost.ceiling_usd; it stops before generation."""


def preflight_uri(layout: RunLayout) -> str:
    """``validation/cost.json``: the estimate the ceiling was checked against (a pre-generation check, so it
    lives with the other checks' reports under ``validation/``)."""
    return layout.cost_preflight


def _round(value: float | None, digits: int = 9) -> float | None:
    """``digits`` significant digits: a short run costs well under a micro-dollar, so a fixed
    number of decimals would keep only a digit or two of it (and totals summed from rounded
    shards would drift from the run's own figures)."""
    return None if value is None else float(f"{value:.{digits}g}")


# --- prices ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """Hourly rates for one run's devices and nodes."""

    accelerator: str
    node_type: str | None
    spot: bool
    usd_per_device_hour: float | None
    usd_per_node_hour: float
    note: str | None = None

    def usd(self, device_s: float, node_s: float) -> float | None:
        """USD for the device- and node-seconds at these rates; None when the accelerator has no price."""
        if self.usd_per_device_hour is None:
            return None
        return device_s / 3600.0 * self.usd_per_device_hour + node_s / 3600.0 * self.usd_per_node_hour

    def to_json(self) -> dict[str, Any]:
        """The rates and the missing-price note, as recorded in the cost preflight and run figures."""
        return {"accelerator": self.accelerator, "node_type": self.node_type, "spot": self.spot,
                "usd_per_device_hour": self.usd_per_device_hour, "usd_per_node_hour": self.usd_per_node_hour,
                "note": self.note}


def price_table(spec: RunSpec) -> dict[str, dict[str, dict[str, float]]]:
    """DEFAULT_PRICES with the spec's ``cost.price_table`` merged over it (spot defaults to on-demand)."""
    table = {kind: {k: dict(v) for k, v in entries.items()} for kind, entries in DEFAULT_PRICES.items()}
    override = spec.cost.price_table
    for kind, entries in (("accelerators", override.accelerators), ("nodes", override.nodes)):
        for key, entry in entries.items():
            table[kind][key] = {"on_demand": entry.on_demand,
                                "spot": entry.on_demand if entry.spot is None else entry.spot}
    return table


def devices_per_shard(spec: RunSpec) -> int:
    """Devices one shard holds: the pod's GPUs on Kubernetes (a CPU pod counts as one), else the local devices."""
    if spec.execution.backend == "kubernetes":
        return max(1, spec.execution.gpus_per_pod)
    return max(1, len(spec.execution.devices or []))


def accelerator_for(spec: RunSpec, devices: Sequence[str] = ()) -> str:
    """The price-table accelerator of a run: ``cost.accelerator``, else the GPU type on GPUs, else ``cpu``.

    ``devices`` are the torch devices the shards reported (empty before the run: then the spec decides;
    a local run without ``execution.devices`` is assumed to run on CPU).
    """
    if spec.cost.accelerator:
        return spec.cost.accelerator
    execution = spec.execution
    on_gpu = (execution.backend == "kubernetes" and execution.gpus_per_pod > 0) or any(
        str(d).startswith("cuda") for d in (devices or execution.devices or []))
    if on_gpu:
        return execution.gpu_type or "gpu"
    return "cpu"


def resolve_price(spec: RunSpec, accelerator: str) -> Price:
    """The run's hourly rates (spot or on-demand) for ``accelerator`` and ``cost.node_type``; a note names a missing key."""
    table = price_table(spec)
    rate = "spot" if spec.cost.spot else "on_demand"
    notes = []
    device = table["accelerators"].get(accelerator)
    if device is None:
        notes.append(f"no price for accelerator {accelerator!r}: add cost.price_table.accelerators.{accelerator} "
                     f"(known: {', '.join(sorted(table['accelerators']))})")
    node_rate = 0.0
    node_type = spec.cost.node_type
    if node_type is not None:
        node = table["nodes"].get(node_type)
        if node is None:
            notes.append(f"no price for node type {node_type!r}: add cost.price_table.nodes.{node_type}")
        else:
            node_rate = float(node[rate])
    return Price(accelerator=accelerator, node_type=node_type, spot=spec.cost.spot,
                 usd_per_device_hour=None if device is None else float(device[rate]),
                 usd_per_node_hour=node_rate, note="; ".join(notes) or None)


# --- measured figures of a run ---------------------------------------------------------------------


def shard_figures(shard_manifest: Mapping[str, Any], price: Price) -> dict[str, Any]:
    """Device-seconds, items per device-second and USD of one committed shard."""
    timings = shard_manifest.get("timings") or {}
    devices = len(shard_manifest.get("devices") or []) or 1
    # Round first and derive the rest from the rounded figures, so that the manifest's totals
    # (sums of these) agree with each other exactly, however short the shard.
    # every attempt's wall when the worker recorded it (a resumed shard paid for the attempts before it too)
    wall_s = round(float(timings.get("wall_s_all_attempts", timings.get("wall_s", 0.0))), 3)
    device_s = round(wall_s * devices, 3)
    generated = int(shard_manifest.get("generated", 0))
    return {
        "shard": shard_manifest.get("shard"),
        "devices": devices,
        "device_s": device_s,
        "compute_device_s": round(float(timings.get("compute_s", 0.0)), 3),
        "generated": generated,
        "items_per_device_s": round(generated / device_s, 4) if device_s else None,
        "usd": _round(price.usd(device_s, wall_s)),
    }


def run_figures(spec: RunSpec, shard_manifests: Sequence[Mapping[str, Any]], *, est_cost_units: float | None = None,
                preflight: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cost section of a run's manifest and report, from its shard manifests."""
    devices = [str(d) for m in shard_manifests for d in (m.get("devices") or [])]
    price = resolve_price(spec, accelerator_for(spec, devices))
    shards = [shard_figures(m, price) for m in shard_manifests]
    device_s = sum(s["device_s"] for s in shards)
    compute_s = sum(s["compute_device_s"] for s in shards)
    items = sum(s["generated"] for s in shards)
    usd = None if price.usd_per_device_hour is None else sum(float(s["usd"] or 0.0) for s in shards)
    return {
        "currency": CURRENCY,
        "price": price.to_json(),
        "device_s": round(device_s, 3),
        "compute_device_s": round(compute_s, 3),
        "items": items,
        "items_per_device_s": round(items / device_s, 4) if device_s else None,
        "usd": _round(usd),
        "usd_per_1k_items": _round(usd / items * 1000.0) if usd is not None and items else None,
        "est_cost_units": est_cost_units,
        "cost_units_per_device_s": round(est_cost_units / compute_s, 3) if est_cost_units and compute_s else None,
        "ceiling_usd": spec.cost.ceiling_usd,
        "preflight_usd": None if preflight is None else preflight.get("usd"),
        "shards": shards,
    }


# --- the estimate before generation and the ceiling ------------------------------------------------


def model_throughput(spec: RunSpec, card: Mapping[str, Any] | None, accelerator: str) -> tuple[float, str]:
    """(cost units per device-second, where the figure came from) for the run's model version."""
    metrics = (card or {}).get("metrics") or {}
    measured = metrics.get(CARD_THROUGHPUT_KEY)
    if isinstance(measured, Mapping):
        measured = measured.get(accelerator)
    if isinstance(measured, (int, float)) and not isinstance(measured, bool) and measured > 0:
        return float(measured), f"model card metrics.{CARD_THROUGHPUT_KEY} ({accelerator})"
    if spec.cost.throughput_per_device_s:
        return float(spec.cost.throughput_per_device_s), "spec cost.throughput_per_device_s"
    kind = "cpu" if accelerator == "cpu" else "gpu"
    return DEFAULT_THROUGHPUT[(spec.task, kind)], f"genbatch default for {spec.task} on {kind} (conservative)"


def estimate(spec: RunSpec, *, est_cost_units: float, num_shards: int, card: Mapping[str, Any] | None) -> dict[str, Any]:
    """Estimated device-seconds, wall time and USD of generating ``est_cost_units`` in ``num_shards`` shards.

    compute device-s = cost units / throughput; every shard also holds its devices for
    ``cost.shard_startup_s`` (image pull, model load) before it generates.
    """
    accelerator = accelerator_for(spec)
    price = resolve_price(spec, accelerator)
    throughput, source = model_throughput(spec, card, accelerator)
    per_shard = devices_per_shard(spec)
    startup_s = spec.cost.shard_startup_s
    compute_device_s = est_cost_units / throughput
    device_s = compute_device_s + num_shards * per_shard * startup_s
    node_s = compute_device_s / per_shard + num_shards * startup_s
    usd = price.usd(device_s, node_s)
    return {
        "currency": CURRENCY,
        "est_cost_units": est_cost_units,
        "throughput_per_device_s": throughput,
        "throughput_source": source,
        "num_shards": num_shards,
        "devices_per_shard": per_shard,
        "shard_startup_s": startup_s,
        "device_s": round(device_s, 3),
        "wall_s_if_parallel": round(compute_device_s / (num_shards * per_shard) + startup_s, 3),
        "price": price.to_json(),
        "usd": _round(usd),
        "ceiling_usd": spec.cost.ceiling_usd,
    }


def figures_for_run(state: RunState) -> dict[str, Any] | None:
    """:func:`run_figures` of a run from its storage (committed shard manifests, plan, preflight); None when
    no shard has committed. What the quality stage hands the report (``ReportData(cost=...)``)."""
    layout = state.layout
    shards = [storage.read_json(layout.shard_manifest(s)) for s in range(state.num_shards)
              if storage.exists(layout.shard_manifest(s))]
    if not shards:
        return None
    plan = storage.read_json(layout.shard_plan) if storage.exists(layout.shard_plan) else {}
    preflight = storage.read_json(preflight_uri(layout)) if storage.exists(preflight_uri(layout)) else None
    return run_figures(state.spec, shards, est_cost_units=plan.get("est_cost_total"), preflight=preflight)


def check_ceiling(run: RunRef) -> dict[str, Any]:
    """After preprocess, before generation: estimate the run's cost; stop it when over ``cost.ceiling_usd``.

    Writes ``validation/cost.json`` either way (so the stopped run shows why) and raises
    :class:`CostCeilingExceeded` when the estimate is over the ceiling, or cannot be priced while a
    ceiling is set (fail closed).
    """
    from genbatch.run.state import as_run_state

    state = as_run_state(run)
    plan = storage.read_json(state.layout.shard_plan)
    spec = state.spec
    est = estimate(spec, est_cost_units=float(plan["est_cost_total"]), num_shards=state.num_shards,
                   card=read_card_if_any(state.model.uri))
    ceiling = spec.cost.ceiling_usd
    est["within_ceiling"] = None if ceiling is None or est["usd"] is None else est["usd"] <= ceiling
    storage.write_json(preflight_uri(state.layout), est, overwrite=True)
    if ceiling is None:
        return est
    hours = est["device_s"] / 3600.0
    if est["usd"] is None:
        raise CostCeilingExceeded(
            f"run {state.run_id}: cannot check cost.ceiling_usd={ceiling:g}: {est['price']['note']}; the run stops "
            "before generation (add the price to cost.price_table or set cost.accelerator)")
    if est["usd"] > ceiling:
        raise CostCeilingExceeded(
            f"run {state.run_id}: estimated cost ${est['usd']:.2f} exceeds cost.ceiling_usd=${ceiling:.2f}, so the run "
            f"stops before generation. Estimate: {est['est_cost_units']:.6g} cost units at "
            f"{est['throughput_per_device_s']:.6g}/device-s ({est['throughput_source']}) + "
            f"{est['num_shards']} shard(s) x {est['shard_startup_s']:g} s startup = {hours:.3g} device-hours of "
            f"{est['price']['accelerator']} at ${est['price']['usd_per_device_hour']}/h"
            f"{' (spot)' if spec.cost.spot else ' (on-demand)'}. Raise cost.ceiling_usd, split the input, or run on "
            f"spot (cost.spot: true on a spot node pool); see {preflight_uri(state.layout)}")
    return est


# --- genbatch cost: across runs --------------------------------------------------------------------


def find_runs(uris: Iterable[str]) -> list[str]:
    """Published run dirs: each URI is a run dir (has manifest.json) or a prefix holding runs."""
    found = [run_dir for uri in uris for run_dir in find_run_dirs(uri, MANIFEST)]
    return sorted(dict.fromkeys(found))


def run_cost(run_dir: str) -> dict[str, Any]:
    """One published run's cost figures (recomputed from its manifest when it predates cost accounting)."""
    from genbatch.run.state import load_run_state

    layout = RunLayout(run_dir)
    manifest = storage.read_json(layout.manifest)
    figures = manifest.get("cost_estimate") or {}
    if "usd" not in figures:  # a manifest from before cost accounting: price its shards now
        spec = load_run_state(run_dir).spec
        figures = {**figures, **run_figures(spec, manifest.get("shards") or [],
                                             est_cost_units=figures.get("est_cost_units"))}
    model = manifest.get("model") or {}
    return {
        "run_id": manifest.get("run_id"),
        "run_dir": run_dir,
        "model_version": f"{model.get('name')}@{model.get('version')}",
        "items": int(figures.get("items", (manifest.get("counts") or {}).get("generated", 0))),
        "device_s": float(figures.get("device_s") or 0.0),
        "compute_device_s": float(figures.get("compute_device_s") or 0.0),
        "est_cost_units": figures.get("est_cost_units"),
        "usd": figures.get("usd"),
        "usd_per_1k_items": figures.get("usd_per_1k_items"),
        "items_per_device_s": figures.get("items_per_device_s"),
        "accelerator": (figures.get("price") or {}).get("accelerator"),
        "spot": (figures.get("price") or {}).get("spot"),
    }


def _aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    items = sum(int(r["items"]) for r in rows)
    device_s = sum(float(r["device_s"]) for r in rows)
    compute_s = sum(float(r["compute_device_s"]) for r in rows)
    priced = [r for r in rows if r["usd"] is not None]
    usd = sum(float(r["usd"]) for r in priced)
    priced_items = sum(int(r["items"]) for r in priced)
    units = [float(r["est_cost_units"]) for r in rows if r.get("est_cost_units")]
    return {
        "runs": len(rows),
        "items": items,
        "device_s": round(device_s, 3),
        "items_per_device_s": round(items / device_s, 4) if device_s else None,
        "cost_units_per_device_s": round(sum(units) / compute_s, 3) if units and compute_s else None,
        "usd": round(usd, 6) if priced else None,
        "usd_per_1k_items": round(usd / priced_items * 1000.0, 6) if priced_items else None,
        "unpriced_runs": len(rows) - len(priced),
    }


def summarise(uris: Iterable[str]) -> dict[str, Any]:
    """Cost per run, per model version and per 1k items across every published run under ``uris``."""
    runs = [run_cost(r) for r in find_runs(uris)]
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_version.setdefault(r["model_version"], []).append(r)
    return {
        "currency": CURRENCY,
        "runs": runs,
        "by_model_version": {k: _aggregate(v) for k, v in sorted(by_version.items())},
        "total": _aggregate(runs),
    }


def format_usd(value: float | None) -> str:
    """Dollars for people: cents above $1, four decimals above a cent, three significant digits below."""
    if value is None:
        return "n/a"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= 0.01 or value == 0:
        return f"${value:.4f}"
    return f"${value:.3g}"


def format_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`summarise`'s result (``genbatch cost --table``)."""

    def money(v: Any) -> str:
        return "n/a" if v is None else format_usd(float(v)).lstrip("$")

    def num(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:g}" if isinstance(v, float) else str(v)

    lines = [f"{'run':<36} {'model':<22} {'items':>8} {'device_s':>10} {'items/dev_s':>11} {'USD':>10} {'USD/1k':>10}"]
    for r in summary["runs"]:
        lines.append(f"{str(r['run_id'])[:36]:<36} {r['model_version'][:22]:<22} {r['items']:>8} {r['device_s']:>10.1f} "
                     f"{num(r['items_per_device_s']):>11} {money(r['usd']):>10} {money(r['usd_per_1k_items']):>10}")
    lines.append("")
    lines.append(f"{'model version':<36} {'runs':>5} {'items':>8} {'device_s':>10} {'items/dev_s':>11} "
                 f"{'USD':>10} {'USD/1k':>10}")
    for name, a in list(summary["by_model_version"].items()) + [("TOTAL", summary["total"])]:
        lines.append(f"{name[:36]:<36} {a['runs']:>5} {a['items']:>8} {a['device_s']:>10.1f} "
                     f"{num(a['items_per_device_s']):>11} {money(a['usd']):>10} {money(a['usd_per_1k_items']):>10}")
    return "\n".join(lines)
