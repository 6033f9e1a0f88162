"""A stage run again on a published run (a task cleared in the UI, a retry that outlived publish) writes
nothing: published files are never rewritten by genbatch itself. The operators turn the refusal into a skip."""

from __future__ import annotations

from genbatch.errors import RunAlreadyPublished
from genbatch.io import storage
from genbatch.run.layout import RunLayout


def ensure_unpublished(layout: RunLayout, stage: str) -> None:
    """Raise :class:`RunAlreadyPublished` when ``_SUCCESS`` exists: ``stage`` must not write under it."""
    if storage.exists(layout.success):
        raise RunAlreadyPublished(f"run {layout.root} is published ({layout.success} exists): {stage} does not run "
                                  "again, a published run is never rewritten; use another run id for a new run")
