"""A real local Airflow: api-server, scheduler, dag-processor and triggerer on PostgreSQL.

    python -m devstack.airflow_stack up      # `make airflow`: start (or show) the stack, print URL and logins
    python -m devstack.airflow_stack status  # what is running
    python -m devstack.airflow_stack down    # stop everything `up` started

The stack is the production shape in miniature: LocalExecutor, the FAB auth manager with
per-DAG roles (viewer / operator / admin, see docs/operations.md), a dedicated PostgreSQL
cluster from Debian's ``postgresql`` package (installed by ``up`` when missing), the repo's
``dags/`` folder and the ``genbatch_devices`` pool. Everything lives under one Airflow home
(``.genbatch/airflow-real`` for ``make airflow``); ``stack.json`` there records what was
started, so ``down`` from another shell stops exactly that.

The integration tests use :func:`running_stack`, the same code as a context manager, with a
throw-away PostgreSQL cluster and extra environment (allowed prefixes, canary secrets).

Metrics are opt-in: with ``GENBATCH_STATSD=HOST:PORT`` (or ``up --statsd HOST:PORT``) every
component sends Airflow's StatsD metrics there, meant for a statsd_exporter running with
``docker/monitoring/statsd-mapping.yml`` (docs/operations.md, "Monitoring and alerts").

Airflow reads its configuration from the environment of each process, so nothing here
imports Airflow: the components and the one-off bootstrap run as subprocesses.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "dags"
DEFAULT_HOME = REPO_ROOT / ".genbatch" / "airflow-real"
REGISTRY = REPO_ROOT / ".genbatch" / "registry"
DEVICE_POOL = "genbatch_devices"  # operators.generate.DEVICE_POOL (no Airflow import here)
DEVICE_POOL_SLOTS = max(1, min(4, os.cpu_count() or 1))
STATE_FILE = "stack.json"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# The three genbatch roles and the FAB role each maps to (OPERATOR_ROLE is created by the bootstrap).
OPERATOR_ROLE = "GenbatchOperator"
OPERATOR_DAGS = ("batch_generation",)
ROLES = {"viewer": "Viewer", "operator": OPERATOR_ROLE, "admin": "Admin"}
DB_USER = "genbatch"
DB_NAME = "airflow"
TEST_CLUSTER_PREFIX = "genbatch-test-"
STATSD_ENV = "GENBATCH_STATSD"
STATSD_PREFIX = "airflow"  # docker/monitoring/statsd-mapping.yml matches names under this prefix


class StackError(RuntimeError):
    """The local Airflow stack could not be started or reached; the message says what to fix."""


# --------------------------------------------------------------------------- small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0): reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600, what: str = "",
         stdin: str | None = None) -> str:
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        raise StackError(f"{what or cmd[0]} failed (exit {proc.returncode}): {' '.join(cmd[:6])}\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


# --------------------------------------------------------------------------- PostgreSQL


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["sudo", "-n", "-u", "postgres", *cmd]


def ensure_postgres_installed() -> str:
    """Install Debian's ``postgresql`` when absent; returns the server major version."""
    if shutil.which("pg_createcluster") is None:
        if os.geteuid() != 0:
            raise StackError("PostgreSQL is not installed; run `apt-get install -y postgresql` as root")
        log.warning("installing Debian's postgresql package (first run only)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update"], env=env, timeout=600, what="apt-get update")
        _run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"], env=env, timeout=900,
             what="apt-get install postgresql")
    versions = sorted((p.name for p in Path("/usr/lib/postgresql").iterdir() if p.name.isdigit()), key=int)
    if not versions:
        raise StackError("no PostgreSQL server under /usr/lib/postgresql; reinstall the postgresql package")
    return versions[-1]


def _clusters() -> dict[tuple[str, str], dict[str, str]]:
    out = _run(["pg_lsclusters", "--no-header"], what="pg_lsclusters")
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            found[(parts[0], parts[1])] = {"port": parts[2], "status": parts[3]}
    return found


@dataclass
class Postgres:
    """One Debian PostgreSQL cluster (``pg_createcluster``) owned by this stack."""

    version: str
    cluster: str
    port: int
    password: str
    ephemeral: bool = False
    started_here: bool = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def start(self) -> None:
        existing = _clusters().get((self.version, self.cluster))
        if existing is None:
            opts = ["-o", "fsync=off", "-o", "synchronous_commit=off", "-o", "full_page_writes=off"] \
                if self.ephemeral else []
            _run(["pg_createcluster", self.version, self.cluster, "-p", str(self.port), *opts,
                  "--", "--no-sync" if self.ephemeral else "--data-checksums"], what="pg_createcluster")
            existing = _clusters()[(self.version, self.cluster)]
        self.port = int(existing["port"])
        if existing["status"] != "online":
            _run(["pg_ctlcluster", self.version, self.cluster, "start"], what="pg_ctlcluster start")
            self.started_here = True
        self._psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN "
                   f"CREATE ROLE {DB_USER} LOGIN; END IF; END $$;")
        self._psql(f"ALTER ROLE {DB_USER} PASSWORD '{self.password}'")
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'").strip() != "1":
            self._psql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")

    def _psql(self, sql: str) -> str:
        """Run SQL as the postgres superuser over the local socket (SQL on stdin: no password in `ps`)."""
        return _run(_as_postgres(["psql", "-p", str(self.port), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]),
                    stdin=sql, what="psql")

    def stop(self) -> None:
        if self.ephemeral:
            with contextlib.suppress(StackError):
                _run(["pg_dropcluster", "--stop", self.version, self.cluster], what="pg_dropcluster")
        elif self.started_here:
            with contextlib.suppress(StackError):
                _run(["pg_ctlcluster", self.version, self.cluster, "stop", "-m", "fast"], what="pg_ctlcluster stop")

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "cluster": self.cluster, "port": self.port, "password": self.password,
                "ephemeral": self.ephemeral, "started_here": self.started_here}


def statsd_env(address: str | None) -> dict[str, str]:
    """Airflow's [metrics] settings for sending StatsD to ``HOST:PORT`` (empty when ``address`` is empty).

    Legacy names stay on (Airflow's default): they carry dag_id, task_id, state and pool in the
    dotted name, which the statsd_exporter mapping turns into labels.
    """
    if not address:
        return {}
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise StackError(f"{STATSD_ENV}={address!r} is not HOST:PORT (e.g. 127.0.0.1:9125, statsd_exporter's UDP port)")
    return {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": host,
        "AIRFLOW__METRICS__STATSD_PORT": port,
        "AIRFLOW__METRICS__STATSD_PREFIX": STATSD_PREFIX,
        "AIRFLOW__METRICS__LEGACY_NAMES_ON": "True",
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """A running (or about to run) local Airflow; ``url`` is the UI and REST API base."""

    home: Path
    api_port: int
    postgres: Postgres
    secrets: dict[str, str]
    users: dict[str, str]  # login -> password
    extra_env: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def logs_dir(self) -> Path:
        """Task logs (Airflow's base_log_folder)."""
        return self.home / "logs"

    @property
    def component_logs_dir(self) -> Path:
        return self.home / "component-logs"

    # -- configuration ------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment every Airflow process of this stack runs with."""
        base = {k: v for k, v in os.environ.items()
                if not (k.startswith("AIRFLOW__") or k in {"AIRFLOW_HOME", "AIRFLOW_CONFIG"})}
        prefixes = ",".join(str(p) for p in (REPO_ROOT / "examples", REPO_ROOT / "runs", REGISTRY))
        worker_log_port, trigger_log_port = self.secrets["worker_log_port"], self.secrets["trigger_log_port"]
        cfg = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet_key"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secrets["api_secret_key"],
            "AIRFLOW__API__EXPOSE_CONFIG": "False",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt_secret"],
            "AIRFLOW__API_AUTH__JWT_ISSUER": "genbatch-local",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": worker_log_port,
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": trigger_log_port,
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "10",
            "GENBATCH_ALLOWED_PREFIXES": os.environ.get("GENBATCH_ALLOWED_PREFIXES", prefixes),
            "GX_ANALYTICS_ENABLED": "false",
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            **statsd_env(os.environ.get(STATSD_ENV)),
        }
        return {**base, **cfg, **self.extra_env}

    # -- lifecycle ----------------------------------------------------------------
    def start(self, *, timeout_s: float = 420, tie_to_parent: bool = False) -> None:
        """Migrate, bootstrap (pool, roles, users, model zoo), start the four components, wait until ready.

        ``tie_to_parent``: the components get SIGTERM when this process dies (tests), instead of
        outliving it as ``make airflow``'s detached stack does.
        """
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.component_logs_dir.mkdir(exist_ok=True)
        self.postgres.start()
        self.save()
        env = self.env()
        _run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, what="airflow db migrate")
        log.info("db migrated in %.0f s", time.monotonic() - t0)
        _run([sys.executable, "-m", "devstack.airflow_stack", "_bootstrap", "--users", json.dumps(self.users)],
             env=env, what="bootstrap (pool, roles, users)")
        log.info("bootstrapped in %.0f s", time.monotonic() - t0)
        for name in COMPONENTS:
            cmd = [sys.executable, "-m", "airflow", name]
            if name == "api-server":
                cmd += ["--host", "127.0.0.1", "--port", str(self.api_port)]
            out = (self.component_logs_dir / f"{name}.log").open("ab")
            proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if tie_to_parent else None)
            out.close()
            self.pids[name] = proc.pid
        self.save()
        self.wait_ready(deadline=t0 + timeout_s)
        log.info("stack ready in %.0f s at %s", time.monotonic() - t0, self.url)

    def wait_ready(self, *, deadline: float) -> None:
        """Until the health endpoint reports every component healthy and the DAGs are parsed."""
        import httpx

        dags = ["batch_generation", "consumer_example"]
        last = "no answer yet"
        token: str | None = None
        while time.monotonic() < deadline:
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise StackError(f"{name} exited during start-up; see {self.component_logs_dir / (name + '.log')}:\n"
                                     f"{_tail(self.component_logs_dir / (name + '.log'))}")
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=10).json()
                unhealthy = [k for k, v in health.items() if isinstance(v, dict) and v.get("status") != "healthy"]
                if unhealthy:
                    last = f"unhealthy: {unhealthy}"
                else:
                    token = token or api_token(self.url, "admin", self.users["admin"])
                    missing = [d for d in dags if httpx.get(f"{self.url}/api/v2/dags/{d}", timeout=10,
                                                            headers={"Authorization": f"Bearer {token}"}
                                                            ).status_code != 200]
                    if not missing:
                        return
                    last = f"DAGs not parsed yet: {missing}"
            except (httpx.HTTPError, ValueError, StackError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(2)
        raise StackError(f"Airflow at {self.url} not ready in time ({last}); logs under {self.component_logs_dir}")

    def stop(self, *, timeout_s: float = 30) -> None:
        """SIGTERM each component's process group (it holds the executor's workers), then SIGKILL."""
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_alive(p) for p in self.pids.values()):
            time.sleep(0.5)
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.pids.clear()
        self.postgres.stop()
        self.save()

    def running(self) -> dict[str, bool]:
        return {name: _alive(pid) for name, pid in self.pids.items()}

    # -- persistence ----------------------------------------------------------------
    def save(self) -> None:
        path = self.home / STATE_FILE
        data = {"api_port": self.api_port, "postgres": self.postgres.to_json(), "secrets": self.secrets,
                "users": self.users, "extra_env": self.extra_env, "pids": self.pids}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)

    @classmethod
    def load(cls, home: Path) -> Stack | None:
        path = home / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(home=home, api_port=int(data["api_port"]), postgres=Postgres(**data["postgres"]),
                   secrets=data["secrets"], users=data["users"], extra_env=data.get("extra_env", {}),
                   pids={k: int(v) for k, v in data.get("pids", {}).items()})

    @classmethod
    def create(cls, home: Path, *, cluster: str, ephemeral: bool, extra_env: dict[str, str] | None = None,
               api_port: int | None = None) -> Stack:
        """A stack for ``home``: reuses the secrets, users and database of an earlier one there."""
        home = home.resolve()
        previous = cls.load(home)
        if previous is not None and not ephemeral:
            if api_port is None and not _port_free(previous.api_port):
                previous.api_port = free_port()
            previous.api_port = api_port or previous.api_port
            previous.extra_env = dict(extra_env or {})
            previous.postgres.started_here = False
            return previous
        version = ensure_postgres_installed()
        fernet = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        return cls(
            home=home,
            api_port=api_port or free_port(),
            postgres=Postgres(version=version, cluster=cluster, port=free_port(),
                              password=secrets.token_urlsafe(18), ephemeral=ephemeral),
            secrets={"fernet_key": fernet, "jwt_secret": secrets.token_urlsafe(32),
                     "api_secret_key": secrets.token_urlsafe(32),
                     "worker_log_port": str(free_port()), "trigger_log_port": str(free_port())},
            users={login: secrets.token_urlsafe(12) for login in ROLES},
            extra_env=dict(extra_env or {}),
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _drop_stale_test_clusters(version: str) -> None:
    """Drop throw-away clusters whose test process is gone (a killed run cannot clean up)."""
    for (ver, name), _ in _clusters().items():
        pid = name.removeprefix(TEST_CLUSTER_PREFIX)
        if ver == version and name.startswith(TEST_CLUSTER_PREFIX) and pid.isdigit() and not _alive(int(pid)):
            log.warning("dropping stale test cluster %s/%s", ver, name)
            with contextlib.suppress(StackError):
                _run(["pg_dropcluster", "--stop", ver, name], what="pg_dropcluster")


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def api_token(url: str, username: str, password: str) -> str:
    """A JWT for the REST API (``POST /auth/token``, served by the FAB auth manager)."""
    import httpx

    resp = httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
    if resp.status_code not in (200, 201):
        raise StackError(f"POST {url}/auth/token for {username!r} answered {resp.status_code}: {resp.text[:300]}")
    return str(resp.json()["access_token"])


@contextlib.contextmanager
def running_stack(home: Path, *, extra_env: dict[str, str] | None = None,
                  timeout_s: float = 420) -> Iterator[Stack]:
    """Start a throw-away stack (own PostgreSQL cluster, dropped afterwards) for tests; stop it on exit."""
    stack = Stack.create(home, cluster=f"{TEST_CLUSTER_PREFIX}{os.getpid()}", ephemeral=True, extra_env=extra_env)
    _drop_stale_test_clusters(stack.postgres.version)
    try:
        stack.start(timeout_s=timeout_s, tie_to_parent=True)
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------- bootstrap (runs under Airflow's env)


def _bootstrap(users: dict[str, str]) -> None:
    """Pool, the genbatch roles and users, and the tiny model zoo. Idempotent."""
    from airflow.models.pool import Pool
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from airflow.providers.fab.www.security import permissions as p

    Pool.create_or_update_pool(DEVICE_POOL, DEVICE_POOL_SLOTS, "genbatch local shard processes",
                               include_deferred=False)
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        appbuilder.add_permissions(update_perms=True)
        sm.sync_roles()  # Admin, Viewer, User, Op, Public with Airflow's permissions
        viewer = sm.find_role("Viewer")
        operator = sm.find_role(OPERATOR_ROLE) or sm.add_role(OPERATOR_ROLE)
        # operator = viewer + create runs + edit (trigger, pause, clear) only the DAGs in OPERATOR_DAGS
        grants = [sm.create_permission(p.ACTION_CAN_CREATE, p.RESOURCE_DAG_RUN)]
        for dag_id in OPERATOR_DAGS:
            for action in (p.ACTION_CAN_READ, p.ACTION_CAN_EDIT):
                grants.append(sm.create_permission(action, p.resource_name(dag_id, p.RESOURCE_DAG)))
        for perm in [*viewer.permissions, *grants]:
            if perm is not None and perm not in operator.permissions:
                sm.add_permission_to_role(operator, perm)
        for login, password in users.items():
            role = sm.find_role(ROLES[login])
            user = sm.find_user(username=login)
            if user is None:
                sm.add_user(login, login, "genbatch", f"{login}@genbatch.local", role, password)
            else:
                user.roles = [role]
                user.password = _hash(password)
                sm.update_user(user)
    from models.zoo.seed import ensure_zoo_registered

    ensure_zoo_registered(str(REGISTRY))


def _hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return str(generate_password_hash(password))


# --------------------------------------------------------------------------- CLI


def _print_info(stack: Stack) -> None:
    print(f"Airflow UI and REST API: {stack.url}  (Airflow home: {stack.home})")
    for login, password in stack.users.items():
        print(f"  login {login:<9} password {password:<18} role {ROLES[login]}")
    print(f"  PostgreSQL cluster {stack.postgres.version}/{stack.postgres.cluster} on 127.0.0.1:{stack.postgres.port}")
    print(f"  allowed prefixes: {stack.env()['GENBATCH_ALLOWED_PREFIXES']}")
    env = stack.env()
    if env.get("AIRFLOW__METRICS__STATSD_ON") == "True":
        print(f"  StatsD metrics to {env['AIRFLOW__METRICS__STATSD_HOST']}:{env['AIRFLOW__METRICS__STATSD_PORT']} "
              "(docker/monitoring/statsd-mapping.yml for statsd_exporter)")
    print(f"  component logs: {stack.component_logs_dir}; stop with `python -m devstack.airflow_stack down`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.airflow_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "_bootstrap"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="Airflow home (default %(default)s)")
    parser.add_argument("--port", type=int, help="api-server port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--foreground", action="store_true", help="up: stay attached; Ctrl-C stops the stack")
    parser.add_argument("--statsd", metavar="HOST:PORT",
                        help=f"up: send Airflow's StatsD metrics there (same as ${STATSD_ENV})")
    parser.add_argument("--users", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "_bootstrap":
        _bootstrap(json.loads(args.users))
        return 0
    if args.statsd:
        statsd_env(args.statsd)  # fail fast on a malformed address
        os.environ[STATSD_ENV] = args.statsd
    home = args.home.resolve()
    current = Stack.load(home)
    if args.command == "status":
        if current is None or not current.pids:
            print(f"no stack running under {home}")
            return 1
        print(json.dumps({"url": current.url, "running": current.running()}, indent=2))
        return 0 if current.pids and all(current.running().values()) else 1
    if args.command == "down":
        if current is None or not current.pids:
            print(f"nothing running under {home}")
            return 0
        current.stop()
        print("stopped")
        return 0
    # up
    if current is not None and current.pids and all(current.running().values()):
        _print_info(current)
        return 0
    if current is not None and current.pids:  # a half-dead stack: clean up before starting again
        current.stop()
    stack = Stack.create(home, cluster="genbatch", ephemeral=False, api_port=args.port)
    try:
        stack.start()
    except BaseException:
        stack.stop()
        raise
    _print_info(stack)
    if args.foreground:
        try:
            while all(stack.running().values()):
                time.sleep(2)
            print(f"a component exited: {stack.running()}", file=sys.stderr)
        except KeyboardInterrupt:
            pass
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
