"""Real batch runs end to end: ``genbatch run`` → ``dag.test()`` of batch_generation on SQLite.

Each run is a subprocess (Airflow reads its configuration at import), with a shared Airflow
home and registry under one session directory so the DB migration happens once.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import google_crc32c
import jsonschema
import pytest
import yaml

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from tests.contract_check import check_against_contract
from tests.unit.test_import_direction import imported_modules

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BAD_ROWS = [
    {"id": "bad/slash", "prompt": "colour: red | material: wool | item: scarf\ndescription:"},
    {"id": "no-prompt"},
    {"id": "sku-00001", "prompt": "duplicate id\ndescription:"},
]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("genbatch-work")


def _input(workdir: Path, n_good: int) -> tuple[Path, list[dict[str, Any]]]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n_good]]
    rows += BAD_ROWS
    path = workdir / f"input-{n_good}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


# Every run here keeps the Airflow process light, as the production image does: a task that imports
# torch, transformers, diffusers or apache_beam in it fails (genbatch.cli.light_process).
LIGHT = {"GENBATCH_FORBID_HEAVY_IMPORTS": "1"}


def _run(workdir: Path, spec: dict[str, Any], run_id: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    spec_path = workdir / f"{run_id}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [sys.executable, "-m", "genbatch", "run", str(spec_path), "--run-id", run_id],
        cwd=workdir, capture_output=True, text=True, timeout=900, env={**os.environ, **LIGHT, **(env or {})}, check=False,
    )


def _summary(stdout: str) -> dict[str, Any]:
    """``genbatch run``'s summary: the last JSON document of its output (task logs, such as the Beam job's
    log lines that the provider relays, may hold braces before it)."""
    start = stdout.rindex("\n{\n") + 1 if "\n{\n" in stdout else stdout.index("{")
    return dict(json.loads(stdout[start:]))


def _text_spec(input_path: Path, output: str) -> dict[str, Any]:
    return {
        "task": "text",
        "input": {"uri": str(input_path)},
        "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"max_new_tokens": 40, "seed": 11},
        "sharding": {"num_shards": 2},
        "quality": {"max_reject_rate": 0.2, "min_attribute_mention_rate": 0.85},
        "output": {"uri": output},
    }


def _read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in storage.iter_lines(uri) if x.strip()]


def _check_run(root: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    layout = RunLayout(root)
    for uri in (layout.spec, layout.validation_report, layout.shard_plan, layout.quality_metrics,
                layout.quality_summary, layout.report_html, layout.manifest, layout.success):
        assert storage.exists(uri), uri
    manifest = storage.read_json(layout.manifest)
    counts = manifest["counts"]
    assert counts["input"] == len(rows)
    assert counts["input"] == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["generated"] + counts["errored"]
    assert counts["items_lost"] == 0 and counts["items_duplicated"] == 0
    rejects = [r for u in storage.list_uris(layout.rejects_dir) for r in _read_jsonl(u)]
    assert sorted(r["rule"] for r in rejects) == ["duplicate_id", "id_unsafe", "prompt_missing"]
    outputs = [r for s in range(2) for u in storage.list_uris(layout.outputs_dir(s))
               if u.rsplit("/", 1)[-1].startswith("part-") for r in _read_jsonl(u)]
    errors = [r for s in range(2) for r in _read_jsonl(layout.errors_file(s))]
    ids = Counter([r["id"] for r in outputs] + [r["id"] for r in errors])
    assert all(c == 1 for c in ids.values())
    assert len(ids) == len(rows) - 3
    listed = {f["path"] for f in manifest["files"]}
    assert "spec.json" in listed and any(p.startswith("outputs/shard-00001/part-") for p in listed)
    assert storage.read_json(layout.spec)["model"]["version"] == 2  # production alias pinned
    check_against_contract(root)  # every file and record by the schemas, counts by file kind
    return manifest


def test_text_run_end_to_end_on_local_disk(workdir: Path) -> None:
    input_path, rows = _input(workdir, 60)
    proc = _run(workdir, _text_spec(input_path, str(workdir / "runs")), "local-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = _summary(proc.stdout)
    assert summary["dag_run"].endswith("success") and summary["success_marker"] is True
    assert all(v.startswith("PASS") for v in summary["gates"].values())
    manifest = _check_run(str(workdir / "runs" / "local-run"), rows)
    assert manifest["quality"]["metrics"]["attribute_mention_rate"] >= 0.85

    # The same run again (a cleared or re-sent run): published with this spec, so nothing runs or changes.
    run_dir = workdir / "runs" / "local-run"
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    reconciled = _reconcile(workdir, run_dir)
    assert reconciled["ok"] and reconciled["published"]
    again = _run(workdir, _text_spec(input_path, str(workdir / "runs")), "local-run")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    # the summary is the last JSON document (Airflow logs lines with braces before it when every task skips)
    summary = _summary(again.stdout)
    assert "nothing was run" in summary["already_published"] and summary["success_marker"] is True
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    # Another spec under the published run id: refused in one line before any work, nothing touched.
    changed = {**_text_spec(input_path, str(workdir / "runs")), "generation": {"max_new_tokens": 8, "seed": 11}}
    refused = _run(workdir, changed, "local-run")
    lines = [x for x in refused.stderr.splitlines() if x.startswith("genbatch")]
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert lines[0] == (f"genbatch: error: run {run_dir} is already published with a different spec (sections that "
                        "differ: generation); a published run is never rewritten: use another run id (or output.uri), "
                        "or erase the run first")
    assert {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == before
    assert _reconcile(workdir, run_dir) == reconciled


def _reconcile(workdir: Path, run_dir: Path) -> dict[str, Any]:
    """``genbatch reconcile`` as a user runs it: its JSON report."""
    proc = subprocess.run([sys.executable, "-m", "genbatch", "reconcile", str(run_dir)], cwd=workdir,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return dict(json.loads(proc.stdout))


@pytest.fixture(scope="module")
def gcs_runs(workdir: Path, gcs_emulator: Any) -> dict[str, Any]:
    """On fake-gcs-server: one published text run (with rejects), and one forced to fail at its quality gate."""
    bucket = gcs_emulator.create_bucket("genbatch-contract-runs")
    input_path, rows = _input(workdir, 24)
    output = f"gs://{bucket}/runs"
    env = {"STORAGE_EMULATOR_HOST": gcs_emulator.url}
    published = _run(workdir, _text_spec(input_path, output), "gcs-run", env=env)
    failing = {**_text_spec(input_path, output), "quality": {"max_reject_rate": 0.2, "gates": ["empty_rate <= -1"]}}
    failed = _run(workdir, failing, "gcs-failed", env=env)
    return {"bucket": bucket, "output": output, "rows": rows, "published": published, "failed": failed}


def test_text_run_publishes_to_gcs_emulator(gcs_runs: dict[str, Any]) -> None:
    proc = gcs_runs["published"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_run(f"{gcs_runs['output']}/gcs-run", gcs_runs["rows"])


def test_a_run_that_fails_leaves_a_failed_marker_and_genbatch_wait_says_so(gcs_runs: dict[str, Any], workdir: Path,
                                                                          gcs_emulator: Any) -> None:
    proc = gcs_runs["failed"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    # dag.test's "No tasks to run" poll warning once, not once a second burying the failure above it
    assert (proc.stdout + proc.stderr).count("No tasks to run") == 1
    layout = RunLayout(f"{gcs_runs['output']}/gcs-failed")
    assert not storage.exists(layout.success) and not storage.exists(layout.manifest)
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator.url}
    wait = subprocess.run([sys.executable, "-m", "genbatch", "wait", layout.root, "--timeout", "0"], cwd=workdir,
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert wait.returncode == 1, wait.stdout + wait.stderr
    marker = json.loads(wait.stdout)
    assert marker["status"] == "failed" and marker["failed_task"] == "quality_gate"
    assert "empty_rate" in marker["reason"] and marker["try_number"] == 1  # written by the task's failure callback
    assert marker["airflow_run_id"].startswith("manual__")


def test_image_run_writes_pngs(workdir: Path) -> None:
    rows = [{"id": f"img-{i}", "prompt": f"a {c} square"} for i, c in enumerate(["red", "blue", "green", "tiny"])]
    input_path = workdir / "images.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "task": "image",
        "input": {"uri": str(input_path)},
        "model": {"name": "tiny-image", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"num_inference_steps": 4, "height": 64, "width": 64},
        "sharding": {"num_shards": 2},
        "output": {"uri": str(workdir / "runs")},
    }
    proc = _run(workdir, spec, "image-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = workdir / "runs" / "image-run"
    pngs = sorted(p.name for p in root.glob("outputs/shard-*/images/*.png"))
    assert pngs == sorted(f"img-{i}.png" for i in range(4))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in root.glob("outputs/shard-*/images/*.png"))
    assert (root / "_SUCCESS").exists()
    check_against_contract(str(root))


# --------------------------------------------------------------------------- the outside consumer's view
# Only google-cloud-storage, jsonschema and the schema files: no genbatch import below this line.

CONSUMER_EXAMPLE = REPO / "examples" / "consumer" / "read_run_gcs.py"
SCHEMA_DIR = REPO / "genbatch" / "run" / "schemas"


def _consumer_module() -> Any:
    """docs/operations.md's consumer example, loaded from its file; it may import nothing of genbatch's."""
    imported = {module.split(".")[0] for _, module in imported_modules(CONSUMER_EXAMPLE.read_text())}
    assert imported == {"hashlib", "json", "time", "google"}, imported
    spec = importlib.util.spec_from_file_location("read_run_gcs", CONSUMER_EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gcs_checksums(data: bytes) -> tuple[str, str]:
    """(md5, crc32c) as GCS reports them: base64 of the digest."""
    crc = google_crc32c.value(data).to_bytes(4, "big")
    return base64.b64encode(hashlib.md5(data).digest()).decode(), base64.b64encode(crc).decode()


def test_an_outside_consumer_reads_and_verifies_the_gcs_run_by_the_contract_alone(gcs_runs: dict[str, Any]) -> None:
    from google.cloud import storage as gcs

    schemas = {p.name.split(".")[0]: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.schema.json")}
    consumer = _consumer_module()
    records = consumer.read_run(gcs_runs["bucket"], "runs/gcs-run", timeout_s=5)
    bucket = gcs.Client().bucket(gcs_runs["bucket"])
    prefix = "runs/gcs-run"
    manifest = json.loads(bucket.blob(f"{prefix}/manifest.json").download_as_bytes())
    jsonschema.validate(json.loads(bucket.blob(f"{prefix}/_SUCCESS").download_as_bytes()), schemas["success"])
    jsonschema.validate(manifest, schemas["manifest"])
    assert len(records) == manifest["counts"]["generated"] > 0
    by_kind: Counter[str] = Counter()
    for entry in manifest["files"]:
        blob = bucket.get_blob(f"{prefix}/{entry['path']}")
        data = blob.download_as_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"]), entry["path"]
        assert _gcs_checksums(data) == (blob.md5_hash, blob.crc32c), entry["path"]
        if entry["kind"] in ("output", "error", "reject"):
            schema = schemas[f"output_{manifest['task']}" if entry["kind"] == "output" else entry["kind"]]
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            for line in lines:
                jsonschema.validate(line, schema)
            assert len(lines) == entry["records"]
            by_kind[entry["kind"]] += len(lines)
    counts = manifest["counts"]
    assert [by_kind[k] for k in ("output", "error", "reject")] == [counts[k] for k in ("generated", "errored", "rejected")]
    assert counts["rejected"] == 3 and counts["input"] == len(gcs_runs["rows"])

    with pytest.raises(RuntimeError, match="run failed") as failure:
        consumer.read_run(gcs_runs["bucket"], "runs/gcs-failed", timeout_s=5)
    marker = json.loads(bucket.blob("runs/gcs-failed/_FAILED").download_as_bytes())
    jsonschema.validate(marker, schemas["failed"])
    assert marker["failed_task"] == "quality_gate" and "empty_rate" in marker["reason"]
    assert json.loads(str(failure.value).removeprefix("run failed: ")) == marker  # the consumer saw the marker itself


def test_a_consumer_holding_the_old_manifest_sees_an_erasure_change_the_run(gcs_runs: dict[str, Any], workdir: Path,
                                                                            gcs_emulator: Any) -> None:
    from google.cloud import storage as gcs

    bucket, prefix = gcs.Client().bucket(gcs_runs["bucket"]), "runs/gcs-run"
    old = bucket.blob(f"{prefix}/manifest.json").download_as_bytes()
    old_success = json.loads(bucket.blob(f"{prefix}/_SUCCESS").download_as_bytes())
    assert old_success["manifest_sha256"] == hashlib.sha256(old).hexdigest()
    erase = subprocess.run([sys.executable, "-m", "genbatch", "erase", "--id", "sku-00003", f"{gcs_runs['output']}/gcs-run"],
                           cwd=workdir, capture_output=True, text=True, timeout=300, check=False,
                           env={**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator.url})
    assert erase.returncode == 0, erase.stdout[-3000:] + erase.stderr[-3000:]
    success = json.loads(bucket.blob(f"{prefix}/_SUCCESS").download_as_bytes())
    new = bucket.blob(f"{prefix}/manifest.json").download_as_bytes()
    # what a consumer holding the old manifest sees: _SUCCESS now vouches for another generation ...
    assert success["manifest_sha256"] == hashlib.sha256(new).hexdigest() != old_success["manifest_sha256"]
    assert success["manifest_generation"] == 2
    manifest = json.loads(new)
    # ... which names the one it replaced, kept byte for byte
    assert manifest["previous"] == {"generation": 1, "path": "_manifests/manifest-g00001.json",
                                    "sha256": hashlib.sha256(old).hexdigest()}
    assert bucket.blob(f"{prefix}/_manifests/manifest-g00001.json").download_as_bytes() == old
    # ... and the parts the erasure rewrote no longer match the old manifest's sha256
    old_outputs = {e["path"]: e["sha256"] for e in json.loads(old)["files"] if e["kind"] == "output"}
    changed = [p for p, sha in old_outputs.items()
               if hashlib.sha256(bucket.blob(f"{prefix}/{p}").download_as_bytes()).hexdigest() != sha]
    assert len(changed) == 1
    records = _consumer_module().read_run(gcs_runs["bucket"], prefix, timeout_s=5)
    assert "sku-00003" not in {r["id"] for r in records} and len(records) == json.loads(old)["counts"]["generated"] - 1
