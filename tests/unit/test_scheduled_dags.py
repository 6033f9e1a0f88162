"""The DAG factory of scheduled specs, parsed by a real DagBag in a fresh interpreter (as test_dag_integrity).

The specs folder ($GENBATCH_SPECS_DIR) holds a cron, an arrival and a queue spec and two invalid files:
each valid spec gets its DAGs with batch_generation's stages and the policy, the invalid ones become
one import error naming each file and field, and nothing heavy is imported while parsing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "transformers", "diffusers", "apache_beam", "great_expectations"]
SCHEDULED = ["genbatch__drops", "genbatch__drops__events", "genbatch__nightly", "genbatch__orders",
             "genbatch__orders__events", "genbatch__upstream"]

PROBE = r"""
import json, sys
HEAVY = json.loads(sys.argv[2])
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])

def callbacks(value):
    return [] if value is None else [value] if callable(value) else list(value)

def describe(d):
    return {
        "tasks": {t.task_id: sorted(t.downstream_task_ids) for t in d.tasks},
        "owners": sorted({t.owner for t in d.tasks}),
        "tags": sorted(d.tags),
        "retries": {t.task_id: t.retries for t in d.tasks},
        "failure_callbacks": {t.task_id: [f.__name__ for f in callbacks(t.on_failure_callback)] for t in d.tasks},
        "default_args": sorted(d.default_args),
        "timetable": type(d.timetable).__name__,
        "asset_uris": sorted(a.uri for a in getattr(getattr(d.timetable, "asset_condition", None), "objects", [])),
        "cron": d.timetable.serialize() if d.dag_id == "genbatch__nightly" else None,
        "watchers": [[w.name, *w.trigger.serialize()] for a in getattr(getattr(d.timetable, "asset_condition", None),
                                                                     "objects", []) for w in a.watchers],
        "max_active_runs": d.max_active_runs,
        "catchup": d.catchup,
        "start_date": d.start_date.isoformat() if d.start_date else None,
        "fileloc": d.fileloc,
        "prepare_op": type(d.task_dict["prepare_run"]).__name__ if "prepare_run" in d.task_dict else None,
    }

out = {
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "heavy": [m for m in HEAVY if m in sys.modules],
    "dags": {dag_id: describe(d) for dag_id, d in bag.dags.items()},
}
print(json.dumps(out))
"""

BASE: dict[str, Any] = {"task": "text", "model": {"name": "catalog-copy", "alias": "production"}}
SPECS: dict[str, dict[str, Any]] = {
    "nightly.yaml": {"schedule": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "interval": "P1D",
                                  "max_active_runs": 2},
                     "input": {"uri": "in/{{ data_interval_start | ds }}.jsonl"}, "output": {"uri": "runs/{{ ds }}"}},
    "drops.yaml": {"schedule": {"arrival": {"prefix": "/srv/drops/", "pattern": "*.jsonl", "poll_s": 5}},
                   "input": {"uri": "{{ event_uri }}"}, "output": {"uri": "runs/drops"}},
    "orders.yaml": {"schedule": {"queue": {"scheme": "redis+pubsub", "channels": ["genbatch-orders"]}},
                    "input": {"uri": "{{ event_uri }}"}, "output": {"uri": "runs/orders/{{ event_name }}"}},
    "upstream.yaml": {"schedule": {"assets": ["genbatch://batch_generation/published"]},
                      "input": {"uri": "in.jsonl"}, "output": {"uri": "runs/upstream"}},
    "broken-cron.yaml": {"schedule": {"cron": "every night"}, "input": {"uri": "in.jsonl"},
                         "output": {"uri": "runs/x"}},
    "typo-model.yaml": {"schedule": {"cron": "@daily"}, "model": {"nmae": "catalog-copy", "alias": "production"},
                        "input": {"uri": "in.jsonl"}, "output": {"uri": "runs/y"}},
}


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    specs_dir = tmp_path_factory.mktemp("specs")
    for name, data in SPECS.items():
        (specs_dir / name).write_text(json.dumps({**BASE, **data}))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow")),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "GENBATCH_SPECS_DIR": str(specs_dir)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags"), json.dumps(HEAVY)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["specs_dir"] = str(specs_dir)
    return result


def test_each_valid_spec_gets_its_dags_and_the_invalid_ones_none(parsed: dict[str, Any]) -> None:
    scheduled = sorted(d for d in parsed["dags"] if d.startswith("genbatch__"))
    assert scheduled == SCHEDULED
    assert "batch_generation" in parsed["dags"]


def test_the_invalid_specs_are_one_import_error_naming_each_file_and_field(parsed: dict[str, Any]) -> None:
    [(key, error)] = parsed["errors"].items()
    assert Path(key) == REPO / "dags" / "scheduled_specs_errors.py"
    assert "2 invalid scheduled spec(s); their DAGs are not created, the other specs' DAGs are:" in error
    specs_dir = Path(parsed["specs_dir"])
    assert f"{specs_dir / 'broken-cron.yaml'}: 1 invalid field(s):" in error
    assert "  - schedule.cron: 'every night' is not a cron expression" in error
    assert f"{specs_dir / 'typo-model.yaml'}: 2 invalid field(s):" in error
    assert "  - model.name: required field is missing" in error and "  - model.nmae: unknown field" in error
    for valid in ("nightly.yaml", "drops.yaml", "orders.yaml", "upstream.yaml"):
        assert valid not in error


def test_the_valid_dags_do_not_share_a_file_with_the_import_error(parsed: dict[str, Any]) -> None:
    """Airflow marks every DAG of a file with an import error stale (the scheduler then starts none of them):
    the error must come from a file that holds none of the valid specs' DAGs."""
    [key] = parsed["errors"]
    for dag_id in SCHEDULED:
        fileloc = Path(parsed["dags"][dag_id]["fileloc"])
        assert fileloc == REPO / "dags" / "scheduled_specs.py" != Path(key), dag_id


def test_parsing_imports_nothing_heavy(parsed: dict[str, Any]) -> None:
    assert parsed["heavy"] == []


def test_the_scheduled_dags_follow_the_policy(parsed: dict[str, Any]) -> None:
    for dag_id in SCHEDULED:
        info = parsed["dags"][dag_id]
        assert info["owners"] == ["genbatch"], dag_id
        assert "genbatch" in info["tags"] and "scheduled" in info["tags"], dag_id
        assert all(r is not None for r in info["retries"].values()), dag_id
        # On each task, not in default_args: Airflow serializes default_args' callables as their source code.
        expected = ["notify_failure"] if dag_id.endswith("__events") else ["notify_failure", "mark_run_failed"]
        assert info["failure_callbacks"] == {task: expected for task in info["tasks"]}, dag_id
        assert "on_failure_callback" not in info["default_args"], dag_id
    reference = parsed["dags"]["batch_generation"]
    assert reference["failure_callbacks"] == {task: ["notify_failure", "mark_run_failed"] for task in reference["tasks"]}
    for dag_id, kind in (("genbatch__nightly", "cron"), ("genbatch__drops", "arrival"), ("genbatch__orders", "queue")):
        assert kind in parsed["dags"][dag_id]["tags"]
        assert parsed["dags"][dag_id]["retries"]["prepare_run"] == 0, "a published run skips; nothing to retry"
        assert parsed["dags"][dag_id]["retries"]["publish"] >= 1


def test_the_pipeline_dags_have_batch_generations_tasks(parsed: dict[str, Any]) -> None:
    reference = parsed["dags"]["batch_generation"]["tasks"]
    assert len(reference) == 10
    for dag_id in ("genbatch__nightly", "genbatch__drops", "genbatch__orders", "genbatch__upstream"):
        assert parsed["dags"][dag_id]["tasks"] == reference, dag_id
        assert parsed["dags"][dag_id]["prepare_op"] == "ScheduledPrepareRunOperator", dag_id
    assert parsed["dags"]["batch_generation"]["prepare_op"] == "PrepareRunOperator"


def test_the_schedules_come_from_the_spec_files(parsed: dict[str, Any]) -> None:
    nightly = parsed["dags"]["genbatch__nightly"]
    assert nightly["timetable"] == "CronTriggerTimetable"
    assert nightly["cron"] == {"expression": "0 2 * * *", "timezone": "Europe/Berlin", "interval": 86400.0,
                               "run_immediately": False}
    assert (nightly["max_active_runs"], nightly["catchup"]) == (2, False)
    assert nightly["start_date"].startswith("2026-01-01T00:00:00")
    upstream = parsed["dags"]["genbatch__upstream"]  # runs when another DAG's Asset is updated
    assert (upstream["timetable"], upstream["asset_uris"]) == ("AssetTriggeredTimetable",
                                                              ["genbatch://batch_generation/published"])
    for dag_id in ("genbatch__drops", "genbatch__orders"):  # started by their events DAGs only
        assert parsed["dags"][dag_id]["timetable"] == "NullTimetable", dag_id
        events = parsed["dags"][f"{dag_id}__events"]
        assert events["max_active_runs"] == 1, dag_id
        assert events["tasks"] == {"plan_runs": ["start_runs"], "start_runs": ["check_rejected"],
                                   "check_rejected": []}, dag_id
        assert events["retries"]["check_rejected"] == 0, dag_id


def test_the_events_dags_watch_with_the_specs_trigger(parsed: dict[str, Any]) -> None:
    [[name, classpath, kwargs]] = parsed["dags"]["genbatch__drops__events"]["watchers"]
    assert (name, classpath) == ("genbatch__drops__watcher", "operators.triggers.ArrivalTrigger")
    assert kwargs == {"prefix": "/srv/drops/", "pattern": "*.jsonl", "ready_marker": None, "poll_s": 5.0}
    [[name, classpath, kwargs]] = parsed["dags"]["genbatch__orders__events"]["watchers"]
    # common-messaging's MessageQueueTrigger hands the redis+pubsub scheme to the Redis provider's trigger.
    assert (name, classpath) == ("genbatch__orders__watcher",
                                 "airflow.providers.redis.triggers.redis_await_message.AwaitMessageTrigger")
    assert kwargs == {"channels": ["genbatch-orders"], "redis_conn_id": "redis_default", "poll_interval": 1}


def test_a_task_process_builds_only_its_own_specs_dags(tmp_path: Path) -> None:
    """Airflow's task runner parses the DAG file with its parsing context set to the task's DAG id: then the
    factory builds that spec's DAGs only (the documented dynamic-DAG optimisation), not the whole folder's."""
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    for name in ("nightly.yaml", "drops.yaml", "upstream.yaml"):
        (specs_dir / name).write_text(json.dumps({**BASE, **SPECS[name]}))
    probe = ("import json; from airflow.dag_processing.dagbag import DagBag; "
             "import sys; print(json.dumps(sorted(DagBag(dag_folder=sys.argv[1]).dags)))")
    found = {}
    for context in ("genbatch__drops", "genbatch__drops__events", "genbatch__nightly", ""):
        env = {**{k: v for k, v in os.environ.items() if k != "_AIRFLOW_PARSING_CONTEXT_DAG_ID"},
               "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "GENBATCH_SPECS_DIR": str(specs_dir), **({"_AIRFLOW_PARSING_CONTEXT_DAG_ID": context} if context else {})}
        proc = subprocess.run([sys.executable, "-c", probe, str(REPO / "dags" / "scheduled_specs.py")],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=180, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[context] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["genbatch__drops"] == found["genbatch__drops__events"] == ["genbatch__drops",
                                                                             "genbatch__drops__events"]
    assert found["genbatch__nightly"] == ["genbatch__nightly"]
    assert found[""] == ["genbatch__drops", "genbatch__drops__events", "genbatch__nightly", "genbatch__upstream"]


PRE_IMPORT_PROBE = r"""
import json, sys
import structlog
from airflow.dag_processing.dagbag import DagBag
from airflow.dag_processing.processor import _pre_import_airflow_modules

_pre_import_airflow_modules(sys.argv[1], structlog.get_logger())  # the processor's parent, before its fork
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dags": len(bag.dags), "errors": list(bag.import_errors), "new": sorted(set(sys.modules) - before)}))
"""
# What a parse child must not import itself: the Kubernetes clients behind KubernetesPodOperator (~0.7 s per parse),
# the providers of the event triggers, and the Google provider's asset URI handlers (Airflow loads every provider's
# handlers when a DAG declares its first Asset; Google's pull in google-cloud-storage and gcloud-aio: ~0.4 s).
PROVIDER_PREFIXES = ("kubernetes", "kubernetes_asyncio", "aiohttp", "redis", "google", "gcloud", "airflow.providers.cncf",
                     "airflow.providers.google",
                     "airflow.providers.common.messaging", "airflow.providers.redis",
                     "airflow.providers.standard.operators.branch", "airflow.providers.standard.operators.trigger_dagrun")


@pytest.mark.parametrize("dag_file", ["scheduled_specs.py", "batch_generation.py", "model_promotion.py",
                                      "model_optimization.py"])
def test_the_dag_file_names_the_providers_its_operators_import(dag_file: str, tmp_path: Path) -> None:
    """Airflow's DAG processor pre-imports the ``airflow.*`` modules a DAG file names, once, before it forks the
    child that parses the file. Every provider our operators build on must be named there, or each parse pays
    its import again (bench/dag_parse_stack.py: 2.62 s → under the 2 s target with 200 specs)."""
    specs_dir = tmp_path / "specs"
    specs_dir.mkdir()
    for name in ("nightly.yaml", "drops.yaml", "orders.yaml", "upstream.yaml"):
        (specs_dir / name).write_text(json.dumps({**BASE, **SPECS[name]}))
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "GENBATCH_SPECS_DIR": str(specs_dir)}
    proc = subprocess.run([sys.executable, "-c", PRE_IMPORT_PROBE, str(REPO / "dags" / dag_file)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["dags"] == (6 if dag_file == "scheduled_specs.py" else 1)
    imported_by_the_parse = [m for m in result["new"] if m.split(".")[0] in PROVIDER_PREFIXES
                             or m.startswith(PROVIDER_PREFIXES)]
    assert imported_by_the_parse == []
    assert any(m.startswith("operators.") for m in result["new"]), "the probe parsed the file for real"
