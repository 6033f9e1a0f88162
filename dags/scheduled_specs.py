"""Scheduled specs: one DAG per RunSpec file with a ``schedule`` section in the specs folder.

The folder is $GENBATCH_SPECS_DIR (default: the repository's ``specs/``; on GKE a mounted ConfigMap,
see docker/helm/airflow-values.yaml). Parsing reads only those small YAML files: no network, no
heavy imports. Invalid spec files are reported by ``dags/scheduled_specs_errors.py``, so they never
stop these DAGs. See operators/scheduled.py and docs/operations.md, "Scheduling".
"""

from __future__ import annotations

# Airflow's DAG processor imports the ``airflow.*`` modules a DAG file names once, in its own long-lived
# process, before it forks the child that parses the file ([dag_processor] parsing_pre_import_modules,
# on by default). Naming here the providers that operators/ builds on spares every parse of this file
# their import: ~0.7 s, mostly the Kubernetes clients behind KubernetesPodOperator
# (bench/dag_parse_stack.py); tests/unit/test_scheduled_dags.py checks the list is complete.
import airflow.providers.cncf.kubernetes.operators.pod  # noqa: F401
import airflow.providers.common.messaging.triggers.msg_queue  # noqa: F401
import airflow.providers.google.assets.bigquery  # noqa: F401 (asset URI handlers: loaded with the first Asset)
import airflow.providers.google.assets.gcs  # noqa: F401
import airflow.providers.standard.operators.branch  # noqa: F401
import airflow.providers.standard.operators.trigger_dagrun  # noqa: F401
import airflow.timetables.trigger  # noqa: F401
import airflow.triggers.base  # noqa: F401

from operators.scheduled import build_dags

globals().update(build_dags())
