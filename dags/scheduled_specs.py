"""Scheduled specs: one DAG per RunSpec file with a ``schedule`` section in the specs folder.

The folder is $GENBATCH_SPECS_DIR (default: the repository's ``specs/``; on GKE a mounted ConfigMap,
see docker/helm/airflow-values.yaml). Parsing reads only those small YAML files: no network, no
heavy imports. Invalid spec files are reported by ``dags/scheduled_specs_errors.py``, so they never
stop these DAGs. See operators/scheduled.py and docs/operations.md, "Scheduling".
"""

from __future__ import annotations

from operators.scheduled import build_dags

globals().update(build_dags())
