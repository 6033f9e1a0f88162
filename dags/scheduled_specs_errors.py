"""The import error of invalid scheduled specs: Airflow shows it on this DAG file, naming each spec file and field.

It lives apart from dags/scheduled_specs.py because Airflow marks every DAG of a file with an import
error stale: here, an invalid spec costs only its own DAG. This file defines no DAG.
"""

from __future__ import annotations

from genbatch.schedule.spec import raise_for_invalid_specs

raise_for_invalid_specs()
