"""The cost check stage: between preprocess and generate, stop a run whose estimate is over its ceiling."""

from __future__ import annotations

import logging
from typing import Any

from genbatch.plan.cost import check_ceiling
from genbatch.run.state import RunRef, as_run_state
from genbatch.stages.published import ensure_unpublished

log = logging.getLogger(__name__)


def check_cost_ceiling(run: RunRef) -> dict[str, Any]:
    """After preprocess, before generation: raise CostCeilingExceeded when the estimate is over cost.ceiling_usd."""
    state = as_run_state(run)
    ensure_unpublished(state.layout, "cost_check")
    est = check_ceiling(state)
    log.info("run %s: estimated cost %s USD (ceiling %s)", state.run_id, est["usd"], est["ceiling_usd"])
    return {k: est[k] for k in ("usd", "ceiling_usd", "device_s", "throughput_source", "within_ceiling")}
