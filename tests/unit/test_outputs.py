"""genbatch.run.outputs.read against run dirs built by hand (local, and gs:// on fake-gcs-server)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.outputs import OutputIntegrityError, RunNotPublishedError, output_parts, read, run_dir_of


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _records(shard: int, n: int) -> list[dict[str, Any]]:
    return [{"id": f"s{shard}-{i}", "output": f"text {shard}.{i}", "seed": i, "model_version": 2} for i in range(n)]


def build_run(base: str, run_id: str = "run-1", *, publish: bool = True) -> RunLayout:
    """A published run: two shards' parts, an error part, metrics, the manifest, then _SUCCESS."""
    layout = RunLayout.for_run(base, run_id)
    files = {
        layout.output_part(0, 0): _jsonl(_records(0, 3)),
        layout.output_part(0, 1): _jsonl([{"id": "s0-x", "output": "y"}]),
        layout.output_part(1, 0): _jsonl(_records(1, 4)),
        layout.error_part(1, 0): _jsonl([{"id": "s1-err", "error": "boom"}]),
        layout.worker_metrics(1): b"genbatch_items_total 4\n",
        layout.errors_file(1): _jsonl([{"id": "s1-err", "error": "boom"}]),
        layout.spec: b"{}",
    }
    for uri, data in files.items():
        storage.write_bytes(uri, data)
    entries = [{"path": uri[len(layout.root):].lstrip("/"), "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()} for uri, data in sorted(files.items())]
    manifest = {"schema_version": 1, "run_id": run_id, "counts": {"generated": 8, "errored": 1}, "files": entries}
    storage.write_json(layout.manifest, manifest)
    if publish:
        storage.write_text(layout.success, "")
    return layout


def test_reads_every_record_through_the_manifest(storage_root: str) -> None:
    layout = build_run(storage_root)
    ids = [r["id"] for r in read(layout.root)]
    assert sorted(ids) == sorted(["s0-0", "s0-1", "s0-2", "s0-x", "s1-0", "s1-1", "s1-2", "s1-3"])
    assert [r["id"] for r in read(layout.manifest)] == ids  # the manifest URI works too, same order


def test_only_output_parts_are_records(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path))
    paths = [e["path"] for e in output_parts(storage.read_json(layout.manifest))]
    assert paths == ["outputs/shard-00000/part-r00-00000.jsonl", "outputs/shard-00000/part-r00-00001.jsonl",
                     "outputs/shard-00001/part-r00-00000.jsonl"]


def test_unpublished_run_raises_at_once_without_wait(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path), publish=False)
    with pytest.raises(RunNotPublishedError, match="not published"):
        next(read(layout.root))
    with pytest.raises(TimeoutError):  # also a TimeoutError, for callers that catch that
        next(read(str(tmp_path / "no-such-run")))


def test_waits_for_success_marker(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path), publish=False)
    timer = threading.Timer(0.3, lambda: storage.write_text(layout.success, ""))
    timer.start()
    t0 = time.monotonic()
    try:
        assert len(list(read(layout.root, wait_s=10, poll_s=0.05))) == 8
    finally:
        timer.cancel()
    assert time.monotonic() - t0 >= 0.25


def test_altered_part_is_refused_before_its_records(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path))
    part = Path(layout.output_part(1, 0))
    part.write_bytes(part.read_bytes().replace(b"text 1.2", b"TEXT 1.2"))  # same size, other bytes
    got: list[str] = []
    with pytest.raises(OutputIntegrityError, match=r"part-r00-00000\.jsonl does not match the manifest.*sha256"):
        for record in read(layout.root):
            got.append(record["id"])
    assert not any(i.startswith("s1-") for i in got)  # nothing of the altered part was yielded


def test_truncated_and_missing_parts(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path))
    part = Path(layout.output_part(0, 0))
    part.write_bytes(part.read_bytes()[:-5])
    with pytest.raises(OutputIntegrityError, match="bytes sha256"):
        list(read(layout.root))
    part.unlink()
    with pytest.raises(OutputIntegrityError, match="listed in the manifest but missing"):
        list(read(layout.root))


def test_count_mismatch_with_manifest(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path))
    manifest = storage.read_json(layout.manifest)
    manifest["counts"]["generated"] = 9
    Path(layout.manifest).write_text(json.dumps(manifest))
    with pytest.raises(OutputIntegrityError, match="read 8 records but the manifest counts 9"):
        list(read(layout.root))


def test_success_without_manifest(tmp_path: Path) -> None:
    layout = build_run(str(tmp_path))
    Path(layout.manifest).unlink()
    with pytest.raises(OutputIntegrityError, match="_SUCCESS exists but"):
        list(read(layout.root))


def test_run_dir_of() -> None:
    assert run_dir_of("gs://b/runs/r1/manifest.json") == "gs://b/runs/r1"
    assert run_dir_of("runs/r1/_SUCCESS") == "runs/r1"
    assert run_dir_of("runs/r1/") == "runs/r1"
