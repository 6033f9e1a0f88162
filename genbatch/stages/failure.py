"""``_FAILED``: the marker a run leaves when it ends failed, so a consumer waiting on it stops waiting.

Written once per failed attempt of a run (create-only: the first failed task names the run's failure),
never into a published run (``_SUCCESS`` wins), and removed again when a later attempt publishes
(genbatch.stages.publish). Writing it is best effort: a marker that cannot be written is logged, never
raised, so it cannot hide the failure it reports.
"""

from __future__ import annotations

import logging
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.layout import RunLayout
from genbatch.run.spec import parse_spec, sanitize_run_id

log = logging.getLogger(__name__)


def run_dir_from_params(params: dict[str, Any], airflow_run_id: str) -> str | None:
    """The run dir a DAG run's params name (what prepare_run would return), or None when they name none
    (an invalid spec, or an output outside the allowed prefixes: nothing may be written there)."""
    try:
        spec = parse_spec(dict(params), source="run params")
        root = RunLayout.for_run(spec.output.uri, spec.run_id or sanitize_run_id(airflow_run_id)).root
        allowed = storage.allowed_prefixes_from_env()
        if allowed:
            storage.confine(root, allowed)
    except (GenbatchError, ValueError):
        return None
    return root


def mark_failed(run_dir: str, task: str, reason: str, *, try_number: int | None = None,
                airflow_run_id: str | None = None) -> bool:
    """Write ``<run_dir>/_FAILED`` naming ``task`` and ``reason`` (already redacted); True when written now."""
    layout = RunLayout(run_dir)
    try:
        if storage.exists(layout.success) or storage.exists(layout.failed):
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
