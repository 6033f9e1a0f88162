"""consumer_example: runs whenever batch_generation publishes, and reads that run's outputs.

The pattern for downstream teams: schedule on the published Asset, take the run's absolute URI
(``run_uri``: ``gs://...`` or ``file://...``) and its counts from the triggering event's ``extra`` (set by
batch_generation's publish task), and read only through ``genbatch.run.outputs.read``, which waits for
``_SUCCESS`` and checks every part's checksum (docs/output-contract.md).
Thin: nothing is imported from genbatch at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, task

from operators.alerts import notify_failure

# The Asset batch_generation's publish task emits (dags/batch_generation.py: PUBLISHED).
PUBLISHED = Asset("genbatch://batch_generation/published")

with DAG(
    dag_id="consumer_example",
    description="Example consumer: counts the records of every published batch_generation run.",
    schedule=[PUBLISHED],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    tags=["genbatch", "consumer"],
    default_args={"owner": "genbatch", "retries": 2, "retry_delay": timedelta(seconds=10), "on_failure_callback": notify_failure},
) as dag:

    @task
    def count_records(**context: Any) -> dict[str, Any]:
        """Read the published run named by the triggering Asset event; return a small summary."""
        from genbatch.run.outputs import read

        events = context["triggering_asset_events"][PUBLISHED]
        if not events:
            raise ValueError("no triggering event for the published Asset; trigger this DAG through the Asset")
        results = []
        for event in events:  # several publishes can be batched into one consumer run
            run_uri = event.extra["run_uri"]
            count = sum(1 for _ in read(run_uri, wait_s=60))
            if count != event.extra["counts"]["generated"]:
                raise ValueError(f"{run_uri}: read {count} records, the publish event counts "
                                 f"{event.extra['counts']['generated']} generated")
            results.append({"run_uri": run_uri, "run_id": event.extra.get("run_id"), "records": count})
        return {"runs": results, "records": sum(r["records"] for r in results)}

    count_records()
