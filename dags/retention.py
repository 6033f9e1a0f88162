"""retention: daily, delete run data past the retention policy and record what was deleted.

The policy is deployment configuration (``GENBATCH_RETENTION``: a YAML file path/URI or inline YAML with
``roots``, ``inputs_days``, ``rejects_days``, ``outputs_days``); see genbatch.ops.retention and
docs/operations-team.md. One mapped task per root; "now" is the DAG run's data interval end, so a retry
applies the same cut-off. Thin: nothing is imported from genbatch at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from operators.alerts import notify_failure

with DAG(
    dag_id="retention",
    description="Apply the run-data retention policy (inputs, rejects, outputs) to every root; write deletion records.",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["genbatch", "retention"],
    default_args={"owner": "genbatch", "retries": 2, "retry_delay": timedelta(minutes=5), "on_failure_callback": notify_failure},
) as dag:

    @task
    def retention_roots() -> list[str]:
        """The roots named by the policy (fails with the fix when no policy is configured)."""
        from genbatch.ops.retention import load_policy

        roots = load_policy().roots
        if not roots:
            raise ValueError("the retention policy names no roots: add roots: [gs://BUCKET/runs] to GENBATCH_RETENTION")
        return roots

    @task
    def apply_retention(root: str, **context: Any) -> dict[str, Any]:
        """Apply the policy under one root; returns a small summary (the record's URI and counts)."""
        from genbatch.ops.retention import apply, load_policy

        now = context.get("data_interval_end") or context.get("logical_date")
        record = apply(root, load_policy(), now)
        return {"root": root, "record": record.get("record_uri"), "runs": len(record["runs"]),
                "deleted_runs": sum(1 for r in record["runs"] if r.get("action") == "run_deleted")}

    apply_retention.expand(root=retention_roots())
