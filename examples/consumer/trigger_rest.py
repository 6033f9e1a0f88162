"""Trigger batch_generation with a RunSpec over the REST API, wait, exit 0 on success (apache-airflow-client).

    AIRFLOW_PASSWORD=... python examples/consumer/trigger_rest.py http://127.0.0.1:PORT operator spec.json
"""

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from airflow_client.client import ApiClient, Configuration, DagRunApi, TriggerDAGRunPostBody


def token(base: str, username: str, password: str) -> str:
    """A JWT from the auth manager's POST /auth/token (not part of the client's API)."""
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(f"{base}/auth/token", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.load(response)["access_token"])


def main(base: str, username: str, spec_path: str) -> int:
    """Trigger, poll every 5 s until the run ends, print its state."""
    config = Configuration(host=base, access_token=token(base, username, os.environ["AIRFLOW_PASSWORD"]))
    with ApiClient(config) as client:
        runs = DagRunApi(client)
        body = TriggerDAGRunPostBody(conf=json.loads(Path(spec_path).read_text()), logical_date=None)
        run = runs.trigger_dag_run("batch_generation", body)
        while run.state not in ("success", "failed"):
            time.sleep(5)
            run = runs.get_dag_run("batch_generation", run.dag_run_id)
    print(f"batch_generation {run.dag_run_id}: {run.state.value}")
    return 0 if run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
