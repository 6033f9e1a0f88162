"""Operators of the model_promotion DAG: resolve → evaluate both arms → decide (promote or reject)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class ResolveVersionsOperator(BaseOperator):
    """Pin production and the candidate (alias or version) to versions, before any evaluation."""

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import resolve_arms

        events = (context.get("triggering_asset_events") or {}).values()
        return resolve_arms(dict(context["params"]), [dict(e.extra or {}) for evs in events for e in evs])


class EvaluateVersionOperator(BaseOperator):
    """Run one version on the model's golden set through the batch pipeline; returns the evaluation."""

    template_fields: Sequence[str] = ("versions",)

    def __init__(self, *, arm: str, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arm = arm
        self.versions = versions

    def execute(self, context: Any) -> dict[str, Any]:
        from operators.pipeline_inline import evaluate_arm

        return evaluate_arm(self.versions, self.arm, str(context["run_id"]))


class DecidePromotionOperator(BaseOperator):
    """Compare with bootstrap CIs, then blue-green promote or record an audited rejection."""

    template_fields: Sequence[str] = ("production", "candidate", "versions")

    def __init__(self, *, production: Any, candidate: Any, versions: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.production = production
        self.candidate = candidate
        self.versions = versions

    def execute(self, context: Any) -> dict[str, Any]:
        from models.promotion import decide

        return decide(self.production, self.candidate, self.versions)
