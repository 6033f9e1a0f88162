"""Sorted, create-only output files in bounded memory: an external merge sort as two Beam steps.

1. :class:`SpillSortedRuns` buffers ``(destination, keyed line)`` elements of a bundle, and
   whenever the buffer passes a byte limit (and at the end of the bundle) sorts each
   destination's lines and writes them as one *run* file under a temp prefix; it emits only
   ``(destination, run URI)`` pairs, so no worker ever holds a whole destination.
2. :func:`merge_runs` (after a GroupByKey on the destination, whose values are run URIs)
   streams a k-way ``heapq.merge`` of the runs into a local temp file and publishes it with
   :func:`genbatch.io.storage.upload_file`: create-only, an identical existing object is success.

A keyed line is ``sort_key + "\\t" + JSON``; the whole line is the sort order, so the output is
a pure function of the *set* of lines: byte-identical whatever the runner, the bundling or the
number of runs. Retried bundles leave orphan runs under the temp prefix that no merge reads
(only committed bundle outputs reach the GroupByKey); the job deletes the prefix at the end.
"""

from __future__ import annotations

import hashlib
import heapq
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from beam_jobs.records import KEY_SEPARATOR
from genbatch.io import storage

SPILL_BYTES = 8 * 1024 * 1024
"""Characters buffered per bundle before a spill (all destinations together)."""
MERGE_FANIN = 64
"""Most runs merged at once; more are merged in rounds through local temp files."""
READ_CHUNK = 256 * 1024


def run_uri(tmp_dir: str, dest: str) -> str:
    return storage.join(tmp_dir, "runs", dest, f"{uuid.uuid4().hex}.run")


class SpillSortedRuns(beam.DoFn):
    """``(dest, keyed line)`` in, ``(dest, run URI)`` out; memory bounded by ``limit`` characters."""

    def __init__(self, tmp_dir: str, limit: int = SPILL_BYTES) -> None:
        self.tmp_dir = tmp_dir
        self.limit = limit
        self._buffers: dict[str, list[str]] = {}
        self._size = 0

    def start_bundle(self) -> None:
        self._buffers = {}
        self._size = 0

    def process(self, element: tuple[str, str]) -> Iterator[tuple[str, str]]:
        dest, line = element
        self._buffers.setdefault(dest, []).append(line)
        self._size += len(line) + 1
        if self._size >= self.limit:
            yield from self._spill()

    def finish_bundle(self) -> Iterator[Any]:
        for pair in self._spill():
            yield GlobalWindows.windowed_value(pair)

    def _spill(self) -> list[tuple[str, str]]:
        written = []
        for dest in sorted(self._buffers):
            lines = self._buffers[dest]
            lines.sort()
            uri = run_uri(self.tmp_dir, dest)
            storage.write_bytes(uri, ("\n".join(lines) + "\n").encode("utf-8"))
            written.append((dest, uri))
        self._buffers = {}
        self._size = 0
        return written


def _lines(uri: str) -> Iterator[str]:
    return storage.iter_lines(uri, chunk_size=READ_CHUNK)


def _merge_to_local(sources: list[str], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for line in heapq.merge(*(_lines(s) for s in sources)):
            out.write(line + "\n")


def merge_runs(run_uris: Iterable[str], out_uri: str, fanin: int = MERGE_FANIN) -> dict[str, Any]:
    """Merge sorted runs into ``out_uri`` (key stripped); returns lines, bytes and sha256."""
    sources = sorted(run_uris)
    with tempfile.TemporaryDirectory(prefix="genbatch-merge-") as work:
        level = 0
        while len(sources) > fanin:
            merged = []
            for start in range(0, len(sources), fanin):
                path = Path(work) / f"level{level}-{start:08d}.run"
                _merge_to_local(sources[start:start + fanin], path)
                merged.append(str(path))
            sources = merged
            level += 1
        final = Path(work) / "final.jsonl"
        digest = hashlib.sha256()
        lines = size = 0
        with final.open("wb") as out:
            for line in heapq.merge(*(_lines(s) for s in sources)):
                data = (line.split(KEY_SEPARATOR, 1)[1] + "\n").encode("utf-8")
                out.write(data)
                digest.update(data)
                lines += 1
                size += len(data)
        storage.upload_file(final, out_uri)
    return {"lines": lines, "bytes": size, "sha256": digest.hexdigest()}


def write_empty(out_uri: str) -> dict[str, Any]:
    storage.write_bytes(out_uri, b"")
    return {"lines": 0, "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def delete_prefix(prefix: str) -> int:
    """Delete every object under a temp prefix (idempotent); returns how many were deleted."""
    uris = storage.list_uris(prefix)
    for uri in uris:
        storage.delete(uri)
    storage.remove_empty_dirs(prefix)
    return len(uris)
