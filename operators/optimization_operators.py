"""Operators of the model_optimization DAG: build an optimised variant, register it, announce it."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, BaseOperator

REGISTERED = Asset("genbatch://registry/version-registered")

# Method -> (function name in models.optimize, keyword arguments) with settings that keep quality.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "int8": ("quantize_int8", {}),
    "prune50": ("prune", {"sparsity": 0.5, "structured": True}),
    "distill": ("distill", {"steps": 600, "hidden_size": 64, "layers": 2}),
}


class MethodsOperator(BaseOperator):
    """The list of methods from the params, so the build can be mapped (one task per variant)."""

    def execute(self, context: Any) -> list[str]:
        return list(context["params"]["methods"])


class OptimizeVersionOperator(BaseOperator):
    """Build one variant of a registry version, register it with lineage, emit the registration Asset."""

    template_fields: Sequence[str] = ("method",)

    def __init__(self, *, method: Any, **kwargs: Any) -> None:
        kwargs.setdefault("outlets", [REGISTERED])
        super().__init__(**kwargs)
        self.method = method

    def execute(self, context: Any) -> dict[str, Any]:
        import models.optimize as optimize
        from genbatch.errors import SpecError
        from models.registry import fetch_verified, register_version, resolve, set_alias

        p = context["params"]
        if self.method not in METHODS:
            raise SpecError(f"unknown optimisation {self.method!r}; choose from {sorted(METHODS)}")
        func_name, kwargs = METHODS[self.method]
        parent = resolve(p["registry"], p["model"], version=int(p["version"]))
        with tempfile.TemporaryDirectory(prefix="genbatch-optimize-") as tmp:
            src = fetch_verified(parent, Path(tmp) / "cache")
            out = Path(tmp) / "variant"
            card = getattr(optimize, func_name)(src, out, **kwargs)
            lineage = {**card["lineage"], "parent_version": parent.version, "optimisation": self.method}
            mv = register_version(p["registry"], p["model"], out, lineage=lineage,
                                  metrics={"quality": card["quality"], "size": card["size"]})
        if p.get("set_candidate_alias"):
            set_alias(p["registry"], p["model"], "candidate", mv.version, reason=f"{self.method} of v{parent.version}")
        context["outlet_events"][REGISTERED].extra = {"model": p["model"], "version": mv.version,
                                                      "registry": p["registry"], "method": self.method}
        return {"version": mv.version, "method": self.method, "size": card["size"], "quality": card["quality"]}
