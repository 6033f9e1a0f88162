"""model_promotion: evaluate a candidate against production on the golden set, then promote or reject.

Triggered with params (model, candidate alias or version) or by the registration Asset event
that the optimisation DAG emits. Thin: no I/O at parse time. The tasks stay light: each evaluation
runs the batch pipeline (Beam, torch) as the worker command ``genbatch model evaluate-arm``, a local
process or a pod as the model's promotion policy spec says (``execution.backend``); resolving and
deciding only read and write the registry.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# Naming the providers operators/ builds on lets the DAG processor import them once, not in every parse child
# (see dags/batch_generation.py; tests/unit/test_scheduled_dags.py checks the list is complete).
import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401
import airflow.providers.google.assets.bigquery  # noqa: F401 (asset URI handlers: loaded with the first Asset)
import airflow.providers.google.assets.gcs  # noqa: F401
from airflow.sdk import DAG, Asset, Param

from operators.alerts import notify_failure
from operators.promotion_operators import DecidePromotionOperator, EvaluateVersionOperator, ResolveVersionsOperator

REGISTERED = Asset("genbatch://registry/version-registered")

with DAG(
    dag_id="model_promotion",
    description="Candidate vs production on the golden set; blue-green alias swap or an audited rejection.",
    schedule=[REGISTERED],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "model": Param("catalog-copy", type="string", description="model name in the registry"),
        "candidate": Param("candidate", type="string", description="alias or version number of the candidate"),
        "registry": Param(".genbatch/registry", type="string", description="registry URI (local or gs://)"),
    },
    tags=["genbatch", "models"],
    default_args={"owner": "genbatch", "retries": 1, "retry_delay": timedelta(seconds=10), "on_failure_callback": notify_failure},
) as dag:
    versions = ResolveVersionsOperator(task_id="resolve_versions", retries=0)
    production = EvaluateVersionOperator(task_id="evaluate_production", arm="production", versions=versions.output)
    candidate = EvaluateVersionOperator(task_id="evaluate_candidate", arm="candidate", versions=versions.output)
    decide = DecidePromotionOperator(task_id="decide", production=production.output, candidate=candidate.output,
                                     versions=versions.output, retries=0)
    versions >> [production, candidate] >> decide
