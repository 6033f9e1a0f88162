"""model_optimization: quantise / prune / distil a registry version, register each variant with lineage.

Each registration emits the ``genbatch://registry/version-registered`` Asset event, which
schedules model_promotion for that version. Thin: no I/O at parse time. Each build (torch) runs as
the worker command ``genbatch model build-variant``: a local process, or a pod when the ``execution``
param says ``backend: kubernetes`` (the same settings as a batch run's execution section).
"""

from __future__ import annotations

from datetime import datetime

# Naming the providers operators/ builds on lets the DAG processor import them once, not in every parse child
# (see dags/batch_generation.py; tests/unit/test_scheduled_dags.py checks the list is complete).
import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401
import airflow.providers.google.assets.bigquery  # noqa: F401 (asset URI handlers: loaded with the first Asset)
import airflow.providers.google.assets.gcs  # noqa: F401
from airflow.sdk import DAG, Param

from operators.alerts import notify_failure
from operators.optimization_operators import MethodsOperator, OptimizeVersionOperator
from operators.params import spec_params

with DAG(
    dag_id="model_optimization",
    description="Optimised variants (int8 recipe, structured pruning, distillation) of a model version.",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "model": Param("catalog-copy", type="string"),
        "version": Param(2, type="integer", minimum=1, description="the parent version"),
        "methods": Param(["int8"], type="array", items={"type": "string", "enum": ["int8", "prune50", "distill"]}),
        "registry": Param(".genbatch/registry", type="string"),
        "set_candidate_alias": Param(False, type="boolean", description="also point the candidate alias at it"),
        "execution": spec_params()["execution"],
    },
    tags=["genbatch", "models"],
    default_args={"owner": "genbatch", "retries": 0, "on_failure_callback": notify_failure},
) as dag:
    methods = MethodsOperator(task_id="methods")
    OptimizeVersionOperator.partial(task_id="optimize").expand(method=methods.output)
