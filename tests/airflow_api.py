"""The real local Airflow's REST API as the stack tests drive it: tokens per user, trigger, wait, task states."""

from __future__ import annotations

import time
from typing import Any

import httpx

from devstack.airflow_stack import Stack, api_token


class Api:
    """The REST API as three users (tokens from POST /auth/token)."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.url
        self.client = httpx.Client(base_url=f"{stack.url}/api/v2", timeout=60)
        self.tokens = {user: api_token(stack.url, user, pw) for user, pw in stack.users.items()}

    def call(self, method: str, path: str, *, user: str = "admin", **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, headers={"Authorization": f"Bearer {self.tokens[user]}"}, **kwargs)

    def trigger(self, dag_id: str, conf: dict[str, Any], *, user: str) -> httpx.Response:
        return self.call("POST", f"/dags/{dag_id}/dagRuns", user=user, json={"logical_date": None, "conf": conf})

    def run(self, dag_id: str, dag_run_id: str) -> dict[str, Any]:
        resp = self.call("GET", f"/dags/{dag_id}/dagRuns/{dag_run_id}")
        resp.raise_for_status()
        return dict(resp.json())

    def wait(self, dag_id: str, dag_run_id: str, timeout_s: float = 420) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        run: dict[str, Any] = {"state": "not polled"}
        while time.monotonic() < deadline:
            run = self.run(dag_id, dag_run_id)
            if run["state"] in {"success", "failed"}:
                return run
            time.sleep(3)
        states = self.task_states(dag_id, dag_run_id)
        raise AssertionError(f"{dag_id} {dag_run_id} still {run['state']} after {timeout_s} s: {states}")

    def task_states(self, dag_id: str, dag_run_id: str) -> dict[str, str]:
        tis = self.call("GET", f"/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances").json()["task_instances"]
        return {t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t["state"] for t in tis}

    def xcom_values(self, dag_id: str, dag_run_id: str) -> list[Any]:
        """Every XCom of the run, value included (the list endpoint has no values)."""
        values = []
        for task_id in {k.split("[")[0] for k in self.task_states(dag_id, dag_run_id)}:
            base = f"/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/xcomEntries"
            for entry in self.call("GET", base).json()["xcom_entries"]:
                got = self.call("GET", f"{base}/{entry['key']}", params={"map_index": entry["map_index"]})
                got.raise_for_status()
                values.append(got.json()["value"])
        return values

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """Every run of ``dag_id`` (oldest first), filtered by the list endpoint's query parameters."""
        resp = self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "id", **params})
        resp.raise_for_status()
        return list(resp.json()["dag_runs"])

    def unpause(self, dag_id: str, *, paused: bool = False) -> None:
        resp = self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})
        assert resp.status_code == 200, resp.text
