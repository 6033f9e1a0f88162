"""Invalid scheduled specs: one Airflow import error naming each invalid spec file and field.

It is raised here, not in ``dags/scheduled_specs.py``: Airflow marks every DAG of a file with an
import error stale and the scheduler starts none of them, so one bad file must not stop the valid
specs' DAGs. With no invalid file this file holds no DAG. See operators/scheduled.py.
"""

from __future__ import annotations

from operators.scheduled import build_invalid_specs_dags

globals().update(build_invalid_specs_dags())
