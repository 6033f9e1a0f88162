"""The cost check stage: between preprocess and generate, stop a run whose estimate is over its ceiling."""


from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def check_cost_ceiling(run_dir: str) -> dict[str, Any]:
    """After preprocess, before generation: raise CostCeilingExceeded when the estimate is over cost.ceiling_usd."""
    from genbatch.plan.cost import check_ceiling

    est = check_ceiling(run_dir)
    log.info("run dir %s: estimated cost %s USD (ceiling %s)", run_dir, est["usd"], est["ceiling_usd"])
    return {k: est[k] for k in ("usd", "ceiling_usd", "device_s", "throughput_source", "within_ceiling")}
