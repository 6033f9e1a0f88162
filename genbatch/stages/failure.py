"""``_FAILED``: the marker a run leaves when it ends failed, so a consumer waiting on it stops waiting.

Written once per failed attempt of a run (create-only: the first failed task names the run's failure),
only into a prepared run (``spec.json`` exists: refused params leave nothing anywhere), never into a
published one (``_SUCCESS`` wins), and removed again when the run starts again (genbatch.stages.prepare)
or publishes (genbatch.stages.publish). Writing it is best effort: a marker that cannot be written is
logged, never raised, so it cannot hide the failure it reports.
"""

from __future__ import annotations

import logging

from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.layout import RunLayout

log = logging.getLogger(__name__)


def mark_failed(run_dir: str, task: str, reason: str, *, try_number: int | None = None,
                airflow_run_id: str | None = None) -> bool:
    """Write ``<run_dir>/_FAILED`` naming ``task`` and ``reason`` (already redacted); True when written now."""
    layout = RunLayout(run_dir)
    try:
        if not storage.exists(layout.spec) or storage.exists(layout.success) or storage.exists(layout.failed):
            return False
        run_id = layout.root.rstrip("/").rsplit("/", 1)[-1]
        marker = contract.failed_marker(run_id, task, reason, try_number=try_number, airflow_run_id=airflow_run_id)
        storage.write_json(layout.failed, marker)
    except Exception as exc:  # noqa: BLE001 - the marker must never replace the failure it reports
        log.warning("could not write %s: %s", layout.failed, type(exc).__name__)
        return False
    log.info("run %s marked failed: task %s", run_dir, task)
    return True


def clear_failed(run_dir: str) -> None:
    """Remove ``_FAILED`` (a new attempt of the run starts: it is running again, not failed)."""
    layout = RunLayout(run_dir)
    if storage.exists(layout.failed):
        storage.delete(layout.failed)
