"""The storage contract, run identically against a local directory and fake-gcs-server."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from devstack.gcs_emulator import GcsEmulator
from genbatch.errors import ObjectConflictError, StorageError
from genbatch.io import gcs, storage

pytestmark = pytest.mark.integration


def _race(n: int, fn: Any) -> list[BaseException | None]:
    """Run fn(i) on n threads released together; return each thread's exception or None."""
    barrier = threading.Barrier(n)
    results: list[BaseException | None] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - collected and asserted on
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_roundtrip_bytes_text_json(storage_root: str) -> None:
    b = storage.join(storage_root, "a", "b.bin")
    storage.write_bytes(b, b"\x00\x01binary\xff")
    assert storage.read_bytes(b) == b"\x00\x01binary\xff"

    t = storage.join(storage_root, "t.txt")
    storage.write_text(t, "héllo ✓\n")
    assert storage.read_text(t) == "héllo ✓\n"

    j = storage.join(storage_root, "doc.json")
    storage.write_json(j, {"b": 1, "a": ["x", "ü"]})
    assert storage.read_json(j) == {"b": 1, "a": ["x", "ü"]}
    assert storage.read_text(j) == '{\n  "a": [\n    "x",\n    "ü"\n  ],\n  "b": 1\n}\n'


def test_exists_and_delete(storage_root: str) -> None:
    uri = storage.join(storage_root, "x", "y.txt")
    assert not storage.exists(uri)
    storage.write_text(uri, "y")
    assert storage.exists(uri)
    storage.delete(uri)
    assert not storage.exists(uri)
    storage.delete(uri)  # missing is fine


def test_read_missing_is_not_found(storage_root: str) -> None:
    uri = storage.join(storage_root, "missing.txt")
    with pytest.raises(storage.ObjectNotFoundError, match="missing.txt"):
        storage.read_bytes(uri)
    with pytest.raises(FileNotFoundError):
        list(storage.iter_lines(uri))


def test_list_uris_recursive_sorted_without_temp_files(storage_root: str) -> None:
    names = ["b/2.txt", "a.txt", "b/c/3.txt", "b/1.txt"]
    for n in names:
        storage.write_text(storage.join(storage_root, n), n)
    storage.compare_and_swap_json(storage.join(storage_root, "b", "aliases.json"), lambda _: {})
    storage.write_text(storage.join(storage_root + "-sibling", "no.txt"), "not under the prefix")
    if not storage.is_gcs(storage_root):
        tmp = storage.local_path(storage_root) / "b" / f".1.txt.tmp-{'0' * 32}"
        tmp.write_text("half written")

    got = storage.list_uris(storage_root)
    expected = sorted([*names, "b/aliases.json"])
    assert got == sorted(storage.join(storage_root, n) for n in expected)
    assert storage.list_uris(storage.join(storage_root, "b", "c")) == [storage.join(storage_root, "b/c/3.txt")]
    assert storage.list_uris(storage.join(storage_root, "nothing-here")) == []


def test_iter_lines_streams_and_splits_on_newline_only(storage_root: str) -> None:
    uri = storage.join(storage_root, "lines.jsonl")
    storage.write_bytes(uri, "\ufeffa\r\nb\rstill b\u2028\nc".encode())
    assert list(storage.iter_lines(uri)) == ["a", "b\rstill b\u2028", "c"]

    big = storage.join(storage_root, "big.jsonl")
    line = b"x" * 1000 + b"\n"
    storage.write_bytes(big, line * 8000)  # 8 MB
    tracemalloc.start()
    try:
        count = 0
        for got in storage.iter_lines(big, chunk_size=256 * 1024):
            count += 1
            assert len(got) == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 8000
    assert peak < 3 * 1024 * 1024, f"iter_lines peaked at {peak} bytes for an 8 MB object"


def test_create_only_identical_rewrite_succeeds(storage_root: str) -> None:
    uri = storage.join(storage_root, "out", "part-0.jsonl")
    storage.write_bytes(uri, b"same")
    storage.write_bytes(uri, b"same")  # the retried-after-lost-response case
    storage.write_json(storage.join(storage_root, "m.json"), {"a": 1, "b": 2})
    storage.write_json(storage.join(storage_root, "m.json"), {"b": 2, "a": 1})
    assert storage.read_bytes(uri) == b"same"


def test_create_only_different_content_conflicts_and_keeps_original(
    storage_root: str,
) -> None:
    uri = storage.join(storage_root, "out", "part-0.jsonl")
    storage.write_bytes(uri, b"first")
    with pytest.raises(ObjectConflictError) as info:
        storage.write_bytes(uri, b"second")
    msg = str(info.value)
    assert uri in msg
    assert hashlib.sha256(b"first").hexdigest() in msg
    assert hashlib.sha256(b"second").hexdigest() in msg
    assert storage.read_bytes(uri) == b"first"


def test_create_only_race_has_exactly_one_winner(storage_root: str) -> None:
    uri = storage.join(storage_root, "race", "_SUCCESS")
    n = 8
    results = _race(n, lambda i: storage.write_text(uri, f"writer {i}"))
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    assert all(isinstance(r, ObjectConflictError) for r in results if r is not None), results
    assert storage.read_text(uri) == f"writer {winners[0]}"


def test_overwrite_replaces(storage_root: str) -> None:
    uri = storage.join(storage_root, "o.txt")
    storage.write_text(uri, "old")
    storage.write_text(uri, "new", overwrite=True)
    assert storage.read_text(uri) == "new"
    with pytest.raises(ObjectConflictError):
        storage.write_text(uri, "other")


def test_compare_and_swap_concurrent_increments(storage_root: str) -> None:
    uri = storage.join(storage_root, "model", "aliases.json")

    def bump(current: Any) -> Any:
        doc = dict(current or {"count": 0})
        doc["count"] += 1
        return doc

    def worker(_: int) -> None:
        for _ in range(5):
            storage.compare_and_swap_json(uri, bump)

    results = _race(8, worker)
    assert results == [None] * 8
    assert storage.read_json(uri) == {"count": 40}
    assert storage.compare_and_swap_json(uri, lambda cur: cur) == {"count": 40}


def test_upload_and_download_file(storage_root: str, tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    payload = os.urandom(20 * 1024 * 1024)  # large enough for a resumable upload on GCS
    src.write_bytes(payload)
    uri = storage.join(storage_root, "models", "m", "versions", "1", "weights.bin")

    storage.upload_file(src, uri)
    storage.upload_file(src, uri)  # identical retry is success

    other = tmp_path / "other.bin"
    other.write_bytes(b"different")
    with pytest.raises(ObjectConflictError):
        storage.upload_file(other, uri)

    dest = tmp_path / "dl" / "weights.bin"
    storage.download_file(uri, dest)
    assert dest.read_bytes() == payload
    storage.download_file(uri, dest)  # identical local file is fine
    small = storage.join(storage_root, "small.bin")
    storage.write_bytes(small, b"small")
    with pytest.raises(ObjectConflictError):
        storage.download_file(small, dest)
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["weights.bin"]  # no temp files left


def test_missing_bucket_fails_fast_with_storage_error(
    gcs_emulator: GcsEmulator,
) -> None:
    uri = "gs://no-such-bucket-genbatch/x/y.json"
    start = time.monotonic()
    with pytest.raises(StorageError) as info:
        storage.write_json(uri, {"a": 1})
    assert time.monotonic() - start < 2.0
    assert uri in str(info.value) and "404" in str(info.value)
    assert not isinstance(info.value, ObjectConflictError)


def test_emulator_enforces_generation_precondition(gcs_emulator: GcsEmulator) -> None:
    from google.api_core.exceptions import PreconditionFailed

    bucket = gcs.client().bucket(gcs_emulator.create_bucket("genbatch-precondition"))
    bucket.blob("k").upload_from_string(b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        bucket.blob("k").upload_from_string(b"2", if_generation_match=0)
    blob = bucket.get_blob("k")
    assert blob is not None and blob.download_as_bytes() == b"1"


def test_gcs_object_carries_sha256_and_foreign_objects_compare_by_content(
    gcs_bucket: str,
) -> None:
    uri = f"gs://{gcs_bucket}/a/b.txt"
    storage.write_text(uri, "hello")
    blob = gcs.client().bucket(gcs_bucket).get_blob("a/b.txt")
    assert blob is not None
    assert blob.metadata == {"sha256": hashlib.sha256(b"hello").hexdigest()}

    # An object written by another tool has no sha256 metadata: compare by downloading.
    gcs.client().bucket(gcs_bucket).blob("foreign.txt").upload_from_string(b"theirs")
    storage.write_bytes(f"gs://{gcs_bucket}/foreign.txt", b"theirs")
    with pytest.raises(ObjectConflictError):
        storage.write_bytes(f"gs://{gcs_bucket}/foreign.txt", b"ours")


def test_iter_lines_chunk_boundaries(storage_root: str) -> None:
    uri = storage.join(storage_root, "edge.jsonl")
    lines = ["", "a" * 10, "b" * 3, "", "c" * 25, "d"]
    storage.write_bytes(uri, ("\ufeff" + "\r\n".join(lines) + "\n").encode())
    for chunk_size in (1, 2, 3, 7, 64):
        assert list(storage.iter_lines(uri, chunk_size=chunk_size)) == lines
