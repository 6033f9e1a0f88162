"""Build a registered variant: one optimisation method applied to a registry version, with lineage.

:data:`METHODS` names each method the model_optimization DAG offers and the settings that keep quality.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from genbatch.errors import SpecError

# Method -> (function name in models.optimize, keyword arguments) with settings that keep quality.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "int8": ("quantize_int8", {}),
    "prune50": ("prune", {"sparsity": 0.5, "structured": True}),
    "distill": ("distill", {"steps": 600, "hidden_size": 64, "layers": 2}),
}


def build_variant(registry: str, model: str, version: int, method: str, *,
                  set_candidate_alias: bool = False) -> dict[str, Any]:
    """Build ``method`` of ``model@version``, register it as the next version (and optionally the candidate).

    Returns ``{"version", "method", "size", "quality"}`` of the new version.
    """
    import models.optimize as optimize
    from models.registry import fetch_verified, register_version, resolve, set_alias

    if method not in METHODS:
        raise SpecError(f"unknown optimisation {method!r}; choose from {sorted(METHODS)}")
    func_name, kwargs = METHODS[method]
    parent = resolve(registry, model, version=int(version))
    with tempfile.TemporaryDirectory(prefix="genbatch-optimize-") as tmp:
        src = fetch_verified(parent, Path(tmp) / "cache")
        out = Path(tmp) / "variant"
        card = getattr(optimize, func_name)(src, out, **kwargs)
        lineage = {**card["lineage"], "parent_version": parent.version, "optimisation": method}
        mv = register_version(registry, model, out, lineage=lineage,
                              metrics={"quality": card["quality"], "size": card["size"]})
    if set_candidate_alias:
        set_alias(registry, model, "candidate", mv.version, reason=f"{method} of v{parent.version}")
    return {"version": mv.version, "method": method, "size": card["size"], "quality": card["quality"]}
