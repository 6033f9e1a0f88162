"""The output contract's pieces: file kinds, the schemas, the markers and ``genbatch wait`` (local and gs://).

Real runs are checked against the contract end to end in tests/integration/test_batch_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.layout import RunLayout
from genbatch.run.outputs import OutputIntegrityError, RunFailedError, read, wait_published
from genbatch.stages.failure import clear_failed, mark_failed
from genbatch.stages.publish import published_event

REPO = Path(__file__).resolve().parents[2]


def test_every_name_of_the_layout_has_its_kind() -> None:
    layout = RunLayout("runs/r1")
    expected = {
        layout.output_part(3, 7, rank=1): "output", layout.fanout_part(0): "output",
        layout.errors_file(2): "error", layout.fanout_errors(0): "error", layout.error_part(0, 4): "error_batch",
        layout.rejects_part("validate"): "reject", layout.rejects_part("erasure", 2): "reject",
        layout.image_path(1, "sku-1"): "image", layout.worker_metrics(0, 1): "metrics",
        layout.quality_metrics: "metrics", layout.shard_manifest(0): "shard_manifest",
        layout.report_html: "report", layout.validation_docs: "report", layout.quality_docs: "report",
        layout.quality_summary: "quality", layout.canary_verdict: "quality", layout.spec: "spec",
        layout.validation_report: "validation", layout.validation_accepted: "validation", layout.cost_preflight: "validation",
        layout.auto_shards: "validation", layout.shard_input(1, 4): "shard_input", layout.shard_plan: "plan",
        layout.shard_fanout: "fanout", layout.attempt_record(0, 0, "20261206T101010101010Z-0123abcd"): "attempt",
        layout.manifest_generation(1): "manifest", "runs/r1/_erasures/e1.json": "operator",
        "runs/r1/_retention/20261206.json": "operator",
        "runs/r1/notes.txt": "other", "runs/r1/rejects/readme.md": "other", "runs/r1/outputs/shard-00000/x.bin": "other",
    }
    assert {uri: contract.file_kind(layout.rel(uri)) for uri in expected} == expected
    kinds = contract.schema("manifest")["properties"]["files"]["items"]["properties"]["kind"]["enum"]
    assert set(expected.values()) <= set(kinds)


def test_a_file_entry_counts_the_records_of_the_jsonl_kinds() -> None:
    data = b'{"id": "a"}\n\n{"id": "b"}\n'
    assert contract.file_entry("errors/shard-00000.jsonl", data)["records"] == 2
    assert contract.file_entry("outputs/shard-00000/errors-r00-00001.jsonl", data)["records"] == 2
    assert "records" not in contract.file_entry("validation/accepted.jsonl", data)


@pytest.mark.parametrize("name", contract.SCHEMAS)
def test_each_schema_is_a_valid_draft_2020_12_schema_shipped_with_the_package(name: str) -> None:
    schema = contract.schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"urn:genbatch:contract:{contract.CONTRACT_VERSION}:{name}"
    assert "genbatch.run = schemas/*.schema.json" in (REPO / "setup.cfg").read_text()  # in the wheel, not only the repo


def _text_row(**extra: Any) -> dict[str, Any]:
    return {"_pos": 0, "id": "sku-1", "row_index": 4, "arm": "production", "seed": 7, "model_version": "catalog-copy@2",
            "params_hash": "0f6b", "metadata": {"category": "bags"}, "output": "A bag.", "new_tokens": 3,
            "timings": {"batch_s": 0.1, "batch_size": 8}, **extra}


def _errors(record: dict[str, Any], name: str) -> list[str]:
    return sorted(e.message for e in jsonschema.Draft202012Validator(contract.schema(name)).iter_errors(record))


def test_record_schemas_refuse_a_field_they_do_not_name() -> None:
    assert _errors(_text_row(), "output_text") == []
    assert _errors(_text_row(finish_reason="eos"), "output_text") == [
        "Additional properties are not allowed ('finish_reason' was unexpected)"]
    assert _errors({"index": 3, "rule": "prompt_missing"}, "reject") == [
        "'row_index' is a required property", "Additional properties are not allowed ('index' was unexpected)"]
    assert _errors({"row_index": 3, "rule": "erased"}, "reject") == ["'erasure_id' is a required property"]


def _published(base: str, run_id: str = "r1") -> RunLayout:
    """A run dir with a contract-2 manifest (one output part) and its _SUCCESS."""
    layout = RunLayout.for_run(base, run_id)
    storage.write_json(layout.spec, {})
    part = b'{"id": "a"}\n{"id": "b"}\n'
    storage.write_bytes(layout.output_part(0, 0), part)
    manifest = {"contract_version": 2, "generation": 1, "run_id": run_id, "counts": {"generated": 2},
                "files": [contract.file_entry(layout.rel(layout.output_part(0, 0)), part)]}
    storage.write_json(layout.manifest, manifest)
    storage.write_json(layout.success, contract.success_marker(run_id, storage.read_bytes(layout.manifest), 1,
                                                                 contract.now_iso()))
    return layout


def test_success_vouches_for_the_manifest_it_names(storage_root: str) -> None:
    layout = _published(storage_root)
    jsonschema.validate(storage.read_json(layout.success), contract.schema("success"))
    assert [r["id"] for r in read(layout.root)] == ["a", "b"]
    storage.write_json(layout.manifest, {**storage.read_json(layout.manifest), "counts": {"generated": 3}}, overwrite=True)
    with pytest.raises(OutputIntegrityError, match="_SUCCESS vouches for"):
        wait_published(layout.root)
    storage.write_text(layout.success, "", overwrite=True)  # a contract-1 run: an empty marker vouches for nothing
    assert wait_published(layout.root)["counts"] == {"generated": 3}
    storage.write_text(layout.success, "yes", overwrite=True)
    assert contract.success_problem(b"yes", b"{}") is not None


def test_failed_marker_is_written_once_never_into_a_published_run_and_cleared(storage_root: str) -> None:
    layout = RunLayout.for_run(storage_root, "r2")
    storage.write_json(layout.spec, {})  # a prepared run
    assert mark_failed(layout.root, "generate_local[1]", "RuntimeError: boom", try_number=3)
    assert not mark_failed(layout.root, "generate_local[2]", "later")  # the first failure names the run's
    marker = storage.read_json(layout.failed)
    jsonschema.validate(marker, contract.schema("failed"))
    assert (marker["failed_task"], marker["reason"], marker["try_number"], marker["run_id"]) == (
        "generate_local[1]", "RuntimeError: boom", 3, "r2")
    with pytest.raises(RunFailedError, match=r"task generate_local\[1\].*boom") as err:
        wait_published(layout.root, wait_s=30)  # raises at once, no waiting for a run that failed
    assert err.value.marker == marker
    clear_failed(layout.root)
    assert not storage.exists(layout.failed)
    published = _published(storage_root, "r3")
    assert not mark_failed(published.root, "canary_verdict", "after publishing")
    assert not storage.exists(published.failed)


def test_no_failed_marker_where_no_run_was_prepared(tmp_path: Path) -> None:
    """prepare_run refused the params (or never ran): nothing is written, no run dir appears."""
    layout = RunLayout.for_run(str(tmp_path / "out"), "refused")
    assert not mark_failed(layout.root, "prepare_run", "SpecError: bad")
    assert not (tmp_path / "out").exists()


def _wait(root: str, timeout: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "genbatch", "wait", root, "--timeout", timeout, "--poll", "0.1"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, check=False, env={**os.environ, **(env or {})})


def test_genbatch_wait_exits_0_published_1_failed_2_timed_out(tmp_path: Path) -> None:
    published = _published(str(tmp_path), "ok")
    done = _wait(published.root, "0")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "published" and json.loads(done.stdout)["counts"] == {"generated": 2}

    failed = RunLayout.for_run(str(tmp_path), "bad")
    storage.write_json(failed.spec, {})
    mark_failed(failed.root, "quality_gate", "QualityGateFailed: 1 of 6 gates failed")
    out = _wait(failed.root, "5")
    assert out.returncode == 1 and json.loads(out.stdout)["failed_task"] == "quality_gate"
    assert "1 of 6 gates failed" in out.stderr

    pending = RunLayout.for_run(str(tmp_path), "pending")
    storage.write_json(pending.spec, {})
    late = threading.Timer(1.0, lambda: mark_failed(pending.root, "publish", "late"))
    late.start()
    try:
        assert _wait(pending.root, "60").returncode == 1  # it waited, then saw the marker appear
    finally:
        late.cancel()
    timed_out = _wait(str(tmp_path / "never"), "0.3")
    assert timed_out.returncode == 2 and json.loads(timed_out.stdout)["status"] == "timed_out"

    storage.write_bytes(published.output_part(0, 1), b"{}\n")
    storage.write_json(published.manifest, {**storage.read_json(published.manifest), "generation": 2}, overwrite=True)
    damaged = _wait(published.root, "0")
    assert damaged.returncode == 1 and json.loads(damaged.stdout)["status"] == "damaged"


def test_the_publish_event_names_the_run_by_absolute_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = {"run_id": "r1", "counts": {"generated": 5, "rejected": 1}}
    event = published_event("runs/r1", manifest)
    assert event["run_uri"] == (tmp_path / "runs" / "r1").as_uri()
    assert event["manifest_uri"] == (tmp_path / "runs" / "r1" / "manifest.json").as_uri()
    assert event["counts"] == manifest["counts"] and event["contract_version"] == contract.CONTRACT_VERSION
    assert published_event("gs://b/runs/r1", manifest)["success_uri"] == "gs://b/runs/r1/_SUCCESS"
