"""Operators of the model_optimization DAG: build an optimised variant, register it, announce it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator

REGISTERED = Asset("genbatch://registry/version-registered")


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
        from models.optimize.variants import build_variant

        p = context["params"]
        result = build_variant(p["registry"], p["model"], int(p["version"]), self.method,
                               set_candidate_alias=bool(p.get("set_candidate_alias")))
        context["outlet_events"][REGISTERED].extra = {"model": p["model"], "version": result["version"],
                                                      "registry": p["registry"], "method": self.method}
        return result
