"""The worker pod built inside a real task-instance context (``dag.test()`` of a mapped task, with a
retry), and the labels that reattach-on-restart looks the pod up by.

``KubernetesPodOperator`` adds the task instance's identity (dag, task, run, map index, try) to
the pod's labels only when it has a context, and on a retry finds the earlier try's pod by a label
selector built from the same context minus the try number. Built without a context (as
tests/unit/test_pod_spec.py does) none of this exists. Here each shard's selector must match its
own pod from try 1 and no sibling shard's pod, and the pod must still validate against the
Kubernetes schema with those labels. No cluster runs here: the probe DAG
(``pod_context_probe_dag.py``) replaces only the API call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

from tests.helpers import prepared_run
from tests.unit.test_pod_spec import K8S_SPEC, K8S_VERSION

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "nightly-2026-11-26"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def selects(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes equality-based selector semantics: ``k=v``, ``k!=v``, ``!k`` and ``k``, all ANDed."""
    for term in selector.split(","):
        if "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key) != value
        elif "=" in term:
            key, value = term.split("=", 1)
            ok = labels.get(key) == value
        elif term.startswith("!"):
            ok = term[1:] not in labels
        else:
            ok = term in labels
        if not ok:
            return False
    return True


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], dict[str, Any]]:
    """Every (shard, try) the probe recorded, from one ``dag.test()`` run."""
    tmp = tmp_path_factory.mktemp("pod-context")
    state = prepared_run(str(tmp / "runs"), execution=K8S_SPEC, num_shards=2, run_id=RUN_ID)
    (tmp / "kubeconfig").write_text(KUBECONFIG)
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(Path(__file__).with_name("pod_context_probe_dag.py"), dags)
    out = tmp / "records"
    conn = {"conn_type": "kubernetes", "extra": {"in_cluster": False, "kube_config_path": str(tmp / "kubeconfig")}}
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENBATCH_POD_PROBE_OUT": str(out),
           "GENBATCH_POD_PROBE_RUN": state.layout.root, "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(conn)}
    script = textwrap.dedent(f"""
        from pathlib import Path
        from genbatch.cli.embedded import configure, ensure_db
        home = Path({str(tmp / 'airflow')!r})
        configure(home)
        import os
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = {str(dags)!r}  # the probe DAG's own bundle
        ensure_db(home)
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(dags)!r})
        assert not bag.import_errors, bag.import_errors
        print("STATE", bag.dags["pod_context_probe"].test().state)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    found = {}
    for path in sorted(out.glob("shard-*-try-*.json")):
        rec = json.loads(path.read_text())
        found[(rec["map_index"], rec["try_number"])] = rec
    assert set(found) == {(0, 1), (0, 2), (1, 1), (1, 2)}, (sorted(found), proc.stdout[-2000:], proc.stderr[-3000:])
    return found


def test_each_try_labels_the_pod_with_its_task_instance(records: dict[tuple[int, int], dict[str, Any]]) -> None:
    for (shard, attempt), rec in records.items():
        labels = rec["pod"]["metadata"]["labels"]
        assert labels["dag_id"] == "pod_context_probe" and labels["task_id"] == "generate_kubernetes"
        assert labels["run_id"] == make_safe_label_value(rec["run_id"]) and labels["map_index"] == str(shard)
        assert labels["try_number"] == str(attempt) and labels["kubernetes_pod_operator"] == "True"
        # genbatch's own labels survive the merge with Airflow's.
        assert labels["genbatch/run-id"] == RUN_ID and labels["genbatch/shard"] == str(shard)
        assert rec["pod"]["spec"]["containers"][0]["args"][-1] == str(shard)


def test_a_retry_finds_its_own_shards_pod_and_no_other(records: dict[tuple[int, int], dict[str, Any]]) -> None:
    for shard in (0, 1):
        selector = records[(shard, 2)]["find_pod_selector"]
        assert "try_number" not in selector, selector  # a retry must find the earlier try's pod
        assert selects(selector, records[(shard, 1)]["pod"]["metadata"]["labels"]), selector
        other = records[(1 - shard, 1)]["pod"]["metadata"]["labels"]
        assert not selects(selector, other), f"shard {shard}'s retry would reattach to shard {1 - shard}'s pod"
        checked = {**records[(shard, 1)]["pod"]["metadata"]["labels"], "already_checked": "True"}
        assert not selects(selector, checked), "a pod already handled must not be reattached"


def test_the_pod_with_task_labels_validates_against_the_kubernetes_schema(
        records: dict[tuple[int, int], dict[str, Any]]) -> None:
    for rec in records.values():
        kubernetes_validate.validate(rec["pod"], K8S_VERSION, strict=True)
