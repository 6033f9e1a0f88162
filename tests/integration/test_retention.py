"""Retention on real runs, on local disk and on fake-gcs-server, and the scheduled ``retention`` DAG.

Inputs and rejects expire first: no prompt, rejected row or Data Docs value is left in the run, while
its outputs stay readable and ``reconcile`` still passes; when outputs expire the whole run goes. Each
apply writes a deletion record under ``<root>/_retention/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from tests.integration.test_erasure import build_run, registry, text_rows, tree_bytes  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
POLICY = "{inputs_days: 7, rejects_days: 14, outputs_days: 30}"


def _prompts(rows: list[dict]) -> list[bytes]:
    out = []
    for r in rows:
        for text in (r["prompt"], r["prompt"].strip()):
            out += [text.encode(), json.dumps(text)[1:-1].encode()]
    return out


def test_retention_strips_inputs_then_rejects_then_deletes_the_run(storage_root: str, tmp_path: Path,
                                                                    registry: str) -> None:  # noqa: F811
    from genbatch.ops.retention import apply, load_policy
    from genbatch.run.outputs import read
    from genbatch.run.reconcile import reconcile

    rows = text_rows(6)
    run = build_run(storage_root, "kept", rows, tmp_path, registry)
    layout = RunLayout(run)
    policy = load_policy(POLICY)
    created = dt.datetime.fromisoformat(storage.read_json(layout.spec)["created_at"])
    generated = storage.read_json(layout.manifest)["counts"]["generated"]

    # Day 3: nothing is due; the record says so.
    record = apply(storage_root, policy, created + dt.timedelta(days=3))
    assert record["runs"] == [] and storage.exists(record["record_uri"])

    # Day 8: input copies go. Prompts of accepted rows are nowhere; rejected rows are still there.
    record = apply(storage_root, policy, created + dt.timedelta(days=8))
    assert [(r["run_id"], r["due"]) for r in record["runs"]] == [("kept", ["inputs"])]
    accepted_prompts = _prompts([r for r in rows if r["id"] not in ("bad/slash",)][:-1])
    leaks = {name: data for name, data in tree_bytes(run).items()
             if not name.startswith("/rejects/") and any(p in data for p in accepted_prompts)}
    assert not leaks, sorted(leaks)
    for gone in ("validation/accepted.jsonl", "validation/data_docs.html", "report.html"):
        assert not storage.exists(layout.path(gone)), gone
    assert reconcile(run).ok, reconcile(run).problems
    assert sum(1 for _ in read(run)) == generated
    assert storage.read_json(layout.manifest)["retention"][0]["categories"] == ["inputs"]

    # Day 15: rejects keep only {row_index, rule}; nothing of the input rows is left at all.
    record = apply(storage_root, policy, created + dt.timedelta(days=15))
    assert [(r["run_id"], r["due"]) for r in record["runs"]] == [("kept", ["rejects"])]
    assert not [n for n, d in tree_bytes(run).items() if any(p in d for p in _prompts(rows))]
    for uri in storage.list_uris(layout.rejects_dir):
        assert all(set(json.loads(line)) == {"row_index", "rule"} for line in storage.iter_lines(uri) if line.strip())
    assert reconcile(run).ok, reconcile(run).problems
    assert sum(1 for _ in read(run)) == generated
    # Applying again the same day does nothing more.
    assert apply(storage_root, policy, created + dt.timedelta(days=15))["runs"] == []

    # Day 31: the run is gone; the record lists it, with counts only.
    record = apply(storage_root, policy, created + dt.timedelta(days=31))
    assert [(r["run_id"], r["action"]) for r in record["runs"]] == [("kept", "run_deleted")]
    assert record["runs"][0]["objects_deleted"] > 10
    assert storage.list_uris(run) == []
    stored = storage.read_json(record["record_uri"])
    assert stored["runs"][0]["run_id"] == "kept" and stored["policy"]["outputs_days"] == 30


def test_policy_from_a_file_and_errors(tmp_path: Path) -> None:
    from genbatch.errors import SpecError
    from genbatch.ops.retention import load_policy

    path = tmp_path / "retention.yaml"
    path.write_text("roots: [gs://b/runs]\ninputs_days: 30\noutputs_days: 365\n")
    policy = load_policy(str(path))
    assert policy.roots == ["gs://b/runs"] and policy.rejects_days is None and policy.outputs_days == 365
    with pytest.raises(SpecError, match="no retention policy"):
        load_policy("")
    with pytest.raises(SpecError, match="invalid retention policy"):
        load_policy("{inputs_dayz: 3}")
    with pytest.raises(SpecError, match="no such policy file"):
        load_policy(str(tmp_path / "missing.yaml"))


PROBE = r"""
import json, sys
from pathlib import Path
from genbatch.cli import embedded
home = Path(sys.argv[1])
embedded.configure(home)
embedded.ensure_db(home)
state, tasks = embedded.run_dag({}, "retention")
print(json.dumps({"state": state, "tasks": tasks, "result": embedded.dag_run_xcom("retention", "apply_retention")}))
"""


def test_the_retention_dag_applies_the_policy(tmp_path: Path, registry: str) -> None:  # noqa: F811
    root = str(tmp_path / "runs")
    run = build_run(root, "old", text_rows(3), tmp_path, registry, num_shards=1)
    policy = json.dumps({"roots": [root], "inputs_days": 1e-9, "rejects_days": 1e-9, "outputs_days": 3650})
    env = {**os.environ, "GENBATCH_RETENTION": policy}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "airflow")], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"].endswith("success"), out
    assert not storage.exists(RunLayout(run).validation_accepted)
    records = [u for u in storage.list_uris(storage.join(root, "_retention")) if u.count("/") == root.count("/") + 2]
    assert len(records) == 1
    assert storage.read_json(records[0])["runs"][0]["due"] == ["inputs", "rejects"]
