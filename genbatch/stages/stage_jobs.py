"""quality_gate and publish as worker commands, so a large run's per-item work leaves the Airflow process.

Both read every output of a run (per-item metrics, the gates' frame, the report; the id-level reconciliation
publish repeats before ``_SUCCESS``): about 4 KB of memory per item, which an Airflow worker sized for
orchestration must not carry. Up to ``execution.inline_max_rows`` sharded items they run inside the task;
above it the task runs ``genbatch stage <task> --run-dir DIR``, the same function in a local process or, on
the kubernetes backend, a CPU pod built like every worker pod (bench/scale_e2e.py measures the difference).

The command's contract is the worker's: its JSON result is the last stdout line (and
``$GENBATCH_XCOM_RETURN`` in a pod); exit 2 is permanent (a bad spec, counts that do not reconcile),
exit 3 a quality gate that failed (its message is in ``quality/summary.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.state import RunState

QUALITY_GATE = "quality_gate"
PUBLISH = "publish"
STAGE_TASKS = (QUALITY_GATE, PUBLISH)
EXIT_GATE_FAILED = 3


def stage_command(task_id: str, run_dir: str) -> list[str]:
    """The worker command of ``task_id`` (``quality_gate`` or ``publish``) on ``run_dir``."""
    if task_id not in STAGE_TASKS:
        raise ValueError(f"no worker command for stage {task_id!r}; one of {', '.join(STAGE_TASKS)}")
    return ["genbatch", "stage", task_id, "--run-dir", run_dir]


def sharded_items(state: RunState) -> int:
    """Items the run's plan sent to the shards (0 before preprocess committed a plan)."""
    plan = state.layout.shard_plan
    return int(storage.read_json(plan).get("items", 0)) if storage.exists(plan) else 0


def runs_inline(state: RunState) -> bool:
    """True when the run is small enough for quality_gate and publish to run inside the task."""
    return sharded_items(state) <= state.spec.execution.inline_max_rows


def run_stage(task_id: str, run_dir: str) -> dict[str, Any]:
    """The stage itself, wherever it runs (the task, or ``genbatch stage``): its small JSON result."""
    if task_id == QUALITY_GATE:
        from genbatch.stages.quality import quality_gate

        summary = quality_gate(run_dir)
        return {"passed": summary["passed"], "metrics": summary["metrics"]}
    from genbatch.stages.publish import publish, published_event

    return published_event(run_dir, publish(run_dir))


def gate_failure_message(run_dir: str) -> str:
    """The failed gates' message the quality stage wrote before it exited 3."""
    summary = storage.read_json(RunLayout(run_dir).quality_summary)
    return str(summary.get("failure_message") or "a quality gate failed; see quality/summary.json")


def hand_back(result: dict[str, Any]) -> None:
    """A worker command's result: its last stdout line, and in a pod the XCom sidecar's file."""
    target = os.environ.get("GENBATCH_XCOM_RETURN")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(result))
    print(json.dumps(result, sort_keys=True), flush=True)
