"""cost_check: between preprocess and generate, stop a run whose estimated cost is over its ceiling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class CostCheckOperator(BaseOperator):
    """Estimate the run's cost from ``shards/_plan.json`` and the model's throughput; fail (no retry) when
    it exceeds ``cost.ceiling_usd``. Writes ``cost/preflight.json`` either way; returns a small summary."""

    template_fields: Sequence[str] = ("run_dir",)

    def __init__(self, *, run_dir: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from genbatch.plan.cost import CostCeilingExceeded
        from genbatch.stages.cost_check import check_cost_ceiling
        from operators.genbatch_operators import skip_when_published

        try:
            with skip_when_published():
                return check_cost_ceiling(self.run_dir)
        except CostCeilingExceeded as exc:  # a retry would estimate the same: fail the run now
            raise AirflowFailException(str(exc)) from exc
