"""Embedded mode: run the batch_generation DAG with ``dag.test()`` on a SQLite Airflow home.

Airflow reads its configuration from the environment at import time, so ``configure``
must run before anything imports airflow.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "dags"
STATE_DIR = Path(".genbatch")
DEVICE_POOL = "genbatch_devices"  # operators.generate.DEVICE_POOL (kept free of an Airflow import here)
DEVICE_POOL_SLOTS = max(1, os.cpu_count() or 1)


def configure(home: Path) -> None:
    """Point Airflow at a private SQLite home under ``.genbatch/`` and at our dags folder."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        "AIRFLOW__CORE__MIGHT_CONTAIN_DAG_CALLABLE": f"{__name__}.{embedded_dag_file.__name__}",
        "GX_ANALYTICS_ENABLED": "false",
        "NO_COLOR": "1",
    }
    os.environ.update(env)


SCHEDULER_ONLY_DAG_FILES = frozenset({"scheduled_specs.py", "scheduled_specs_errors.py"})
"""The dags folder's files whose DAGs only a scheduler runs (scheduled specs): not DAG files in this mode."""


def embedded_dag_file(file_path: str, zip_file: Any = None) -> bool:
    """Airflow's ``[core] might_contain_dag_callable`` in the embedded home: whether a file may hold DAGs.

    ``dag.test`` parses the whole dags folder before every run (to record sibling DAGs). The scheduled specs'
    files cost that parse about 0.3 s (the message-queue triggers they import for the scheduler's DAG
    processor), and their DAGs run only under a scheduler, which the embedded mode has none of: here they
    are not DAG files. Every other file is judged by Airflow's own heuristic, as without this setting."""
    from airflow.utils.file import might_contain_dag_via_default_heuristic

    path = Path(file_path)
    if zip_file is None and path.name in SCHEDULER_ONLY_DAG_FILES and path.parent.resolve() == DAGS_FOLDER.resolve():
        return False
    return bool(might_contain_dag_via_default_heuristic(file_path=file_path, zip_file=zip_file))


def ensure_db(home: Path) -> None:
    """Migrate the metadata DB once; later runs find the marker and skip the ~20 s migration."""
    marker = home / ".initialised-v2"
    if marker.exists():
        return
    log.info("initialising the Airflow metadata DB in %s", home)
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    # Local shard processes share this machine's devices: the pool bounds how many run at once.
    subprocess.run([*airflow, "pools", "set", DEVICE_POOL, str(DEVICE_POOL_SLOTS), "genbatch local shard processes"],
                   check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    marker.write_text("ok\n")


class OnceFilter(logging.Filter):
    """Lets the first record whose message starts with ``prefix`` through, and drops the repeats."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        """True for every other record and the first matching one; False for its repeats."""
        if not str(record.msg).startswith(self.prefix):
            return True
        first, self.seen = not self.seen, True
        return first


def run_dag(run_conf: dict[str, Any], dag_id: str = "batch_generation") -> tuple[str, dict[str, str]]:
    """Run one DAG run in-process; returns its state and the state of every task instance.

    The tasks may not import torch, transformers, diffusers or Beam in this process
    (:mod:`genbatch.cli.light_process`), as in the production Airflow image, which has none of them: a task
    that needs one must hand the work to the worker command. ``GENBATCH_FORBID_HEAVY_IMPORTS=0`` turns the
    check off (to debug a task in one process).
    """
    from airflow.dag_processing.dagbag import DagBag

    from genbatch.cli.light_process import ENV_VAR, forbid_heavy_imports
    from genbatch.cli.process import start_up_done

    if os.environ.get(ENV_VAR, "1") != "0":
        forbid_heavy_imports()
    check_each_schema_once()
    serve_fewer_execution_api_versions(Path(os.environ.get("AIRFLOW_HOME", STATE_DIR / "airflow")) / VERSIONS_MEMO)
    # dag.test polls once a second while a failed task's downstream cannot run, logging this each time:
    # once is news, forty times buries the failure above it.
    logging.getLogger("airflow.sdk.definitions.dag").addFilter(OnceFilter("No tasks to run"))

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    start_up_done()  # Airflow, the Execution API and the DAG live until the run ends: spare them the collections
    dr = dag.test(run_conf=run_conf)
    tasks = {}
    for ti in dr.get_task_instances():
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        tasks[key] = str(ti.state)
    return str(dr.state), tasks


def check_each_schema_once() -> None:
    """``jsonschema.validate`` checks the *schema* against its metaschema on every call, and Airflow's
    ``Param.resolve`` calls it for every param each time the DAG or a task's params are serialised or copied
    (about 1,000 times in one ``dag.test`` run, on deep copies of the same few RunSpec section schemas). Here
    a schema whose content passed the check once is not checked again (the key is its canonical JSON, so a
    copy or an equal schema counts as checked and a changed one does not); every value is still validated
    against it on every call, and a schema that fails the check still raises, every time."""

    from jsonschema import validators

    cls: Any = validators.validator_for({})  # the validator of schemas without $schema: the Params' ones
    if getattr(cls.check_schema, "checks_once", False):
        return
    original = cls.check_schema
    passed: set[str] = set()

    def check_schema(schema: Any, *args: Any, **kwargs: Any) -> None:
        try:
            key: str | None = json.dumps(schema, sort_keys=True, allow_nan=False) + repr((args, kwargs))
        except (TypeError, ValueError):
            key = None  # not plain JSON: checked every time
        if key is not None and key in passed:
            return
        original(schema, *args, **kwargs)
        if key is not None:
            passed.add(key)

    check_schema.checks_once = True  # type: ignore[attr-defined]
    cls.check_schema = staticmethod(check_schema)


VERSIONS_MEMO = "execution-api-versions.json"
"""Where the embedded home remembers how many Execution API versions the last app was built with."""


def serve_fewer_execution_api_versions(memo: Path | None = None) -> int:
    """``dag.test`` runs each task against an in-process Execution API: a Cadwyn app that, at its first
    request, builds its routes for every API version it still serves (nine), about 4 s of every embedded run.
    Its only client here is this process's own Task SDK, which speaks one version, the newest. Here the app is
    built, before that first request, with the newest versions only: the fewest that Cadwyn accepts (a route
    that the newest API moved must still be restored by an older version; two versions and a bare third,
    on Airflow 3.3). A version's routes do not depend on the versions older than it, so the SDK's version is
    served exactly as before. Returns how many versions the app serves; when the SDK speaks an older version,
    or no shorter bundle generates, the full bundle stays (and the warning says so).

    ``memo`` (a JSON file in the embedded home) remembers the count that built, keyed on the Airflow and Cadwyn
    versions and the API versions: the next run tries it first instead of the shorter bundles that fail (on
    Airflow 3.3 a failed two-version build costs about 0.7 s of every run). The app built is the same."""
    from airflow.api_fastapi.execution_api import versions
    from airflow.sdk.api.datamodels._generated import API_VERSION
    from airflow.sdk.execution_time.supervisor import in_process_api_server
    from cadwyn import HeadVersion, Version, VersionBundle
    from cadwyn.exceptions import CadwynError

    full = versions.bundle
    if getattr(full, "genbatch_trimmed", False):
        return len(full.versions)
    if full.versions[0].value == API_VERSION and not full.head_version.changes:
        key = _versions_key(full)
        remembered = _read_memo(memo).get(key)
        counts = list(range(2, len(full.versions)))
        tried: list[int] = []
        for keep in sorted(counts, key=lambda k: k != remembered):  # the remembered count first
            tried.append(keep)
            _bind_changes(full, None)  # Cadwyn binds each version change to one bundle
            trimmed = VersionBundle(HeadVersion(), *full.versions[: keep - 1], Version(full.versions[keep - 1].value))
            versions.bundle = trimmed
            in_process_api_server.cache_clear()
            try:
                in_process_api_server().app._cadwyn_initialize()  # what the first request would do
            except CadwynError:
                continue
            trimmed.genbatch_trimmed = True  # type: ignore[attr-defined]
            trimmed.genbatch_tried = tried  # type: ignore[attr-defined]
            if memo is not None and remembered != keep:
                _write_memo(memo, key, keep)
            return keep
    _bind_changes(full, full)
    versions.bundle = full
    in_process_api_server.cache_clear()
    log.warning("the in-process Execution API serves all %s versions (the Task SDK speaks %s)", len(full.versions),
                API_VERSION)
    return len(full.versions)


def _versions_key(bundle: Any) -> str:
    from importlib.metadata import version

    return json.dumps([version("apache-airflow"), version("cadwyn"), [str(v.value) for v in bundle.versions]])


def _read_memo(memo: Path | None) -> dict[str, int]:
    try:
        data = json.loads(memo.read_text()) if memo is not None else {}
    except (OSError, ValueError):
        return {}  # missing or torn: try every count, as without a memo
    return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}


def _write_memo(memo: Path, key: str, keep: int) -> None:
    tmp = memo.with_name(f".{memo.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps({key: keep}))
        os.replace(tmp, memo)  # atomic: a reader sees the old memo or the new one
    except OSError as exc:
        log.info("could not remember the Execution API versions in %s: %s", memo, exc)


def _bind_changes(bundle: Any, to: Any) -> None:
    for version in bundle.versions:
        for change in version.changes:
            change._bound_version_bundle = to


def dag_run_xcom(dag_id: str, task_id: str) -> Any:
    """The return value of ``task_id`` in the latest run of ``dag_id`` (embedded mode)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        if run is None:
            return None
        row = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run.run_id,
                                              XComModel.task_id == task_id, XComModel.key == "return_value").first()
        return None if row is None else XComModel.deserialize_value(row)
