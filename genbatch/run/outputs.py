"""Reading a published run: the consumer side of the output contract.

    from genbatch.run.outputs import read
    for record in read("gs://bucket/runs/<run_id>", wait_s=600):
        ...

A consumer reads only through the manifest, never by listing the run dir: ``read`` waits for
``_SUCCESS`` (written last, after ``manifest.json``; it holds the manifest's sha256), then streams every
file of kind ``output`` the manifest lists, checking each part's size and sha256 before yielding any
of its records. A run marked ``_FAILED`` raises :class:`RunFailedError` at once; a part that is missing,
truncated or altered raises :class:`OutputIntegrityError`; so does a run whose record count disagrees
with the manifest. The records and the manifest follow docs/output-contract.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run.contract import success_problem
from genbatch.run.layout import FAILED, MANIFEST, OUTPUT_PART_RE, SUCCESS, RunLayout

log = logging.getLogger(__name__)



class OutputIntegrityError(GenbatchError):
    """A published run's files do not match its manifest (missing, altered or miscounted)."""


class RunNotPublishedError(GenbatchError, TimeoutError):
    """The run has no ``_SUCCESS`` marker (yet): it is running, or the URI is wrong."""


class RunFailedError(GenbatchError):
    """The run has a ``_FAILED`` marker: it ended failed (``marker``: the failed task, reason and time)."""

    def __init__(self, message: str, marker: dict[str, Any]) -> None:
        super().__init__(message)
        self.marker = marker


def run_dir_of(uri: str) -> str:
    """Accept a run dir or its ``manifest.json`` / ``_SUCCESS`` URI; return the run dir."""
    stripped = uri.rstrip("/")
    for name in (MANIFEST, SUCCESS, FAILED):
        if stripped.endswith("/" + name):
            return stripped[: -len(name) - 1]
    return stripped


def wait_published(uri: str, *, wait_s: float = 0, poll_s: float = 2,
                   sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Wait up to ``wait_s`` for ``_SUCCESS``, then return the manifest it vouches for.

    Raises :class:`RunFailedError` as soon as the run is marked ``_FAILED``, :class:`RunNotPublishedError`
    when neither marker appears in time, :class:`OutputIntegrityError` when ``_SUCCESS`` does not vouch
    for the manifest found.
    """
    layout = RunLayout(run_dir_of(uri))
    deadline = clock() + max(0.0, wait_s)
    while not storage.exists(layout.success):
        if storage.exists(layout.failed):
            marker = storage.read_json(layout.failed)
            raise RunFailedError(f"{layout.root} failed: task {marker.get('failed_task')} at {marker.get('failed_at')}: "
                                 f"{marker.get('reason')}", marker)
        if clock() >= deadline:
            raise RunNotPublishedError(
                f"{layout.root} is not published: no {layout.success} after {wait_s:g} s; the run is still going, "
                f"or the URI is wrong (pass wait_s= to wait longer)")
        sleep(max(0.01, poll_s))
    try:
        manifest_data = storage.read_bytes(layout.manifest)
    except FileNotFoundError:
        raise OutputIntegrityError(f"{layout.root}: _SUCCESS exists but {layout.manifest} does not; the run dir "
                                   "was altered after publishing") from None
    problem = success_problem(storage.read_bytes(layout.success), manifest_data)
    if problem:
        raise OutputIntegrityError(f"{layout.root}: {problem}")
    manifest: dict[str, Any] = json.loads(manifest_data)
    return manifest


def output_parts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file entries that hold output records (kind ``output``; by name in a contract-1 manifest),
    in a stable order."""
    def is_output(entry: dict[str, Any]) -> bool:
        return entry["kind"] == "output" if "kind" in entry else OUTPUT_PART_RE.match(entry["path"]) is not None

    return sorted((f for f in manifest.get("files", []) if is_output(f)), key=lambda f: f["path"])


def _verified_part(layout: RunLayout, entry: dict[str, Any]) -> bytes:
    uri = layout.path(entry["path"])
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise OutputIntegrityError(f"{uri} is listed in the manifest but missing") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry["bytes"] or digest != entry["sha256"]:
        raise OutputIntegrityError(
            f"{uri} does not match the manifest: {len(data)} bytes sha256 {digest}, expected {entry['bytes']} "
            f"bytes sha256 {entry['sha256']}; the part was altered after publishing, do not use this run")
    return data


def read(uri: str, *, wait_s: float = 0, poll_s: float = 2) -> Iterator[dict[str, Any]]:
    """Yield the output records of a published run, each part checked against the manifest first.

    ``uri`` is the run dir (``<output.uri>/<run_id>``) or its manifest URI, local or ``gs://``.
    Raises :class:`RunNotPublishedError` when ``_SUCCESS`` does not appear within ``wait_s``
    seconds and :class:`OutputIntegrityError` when a part is missing or altered, or the number
    of records differs from the manifest's ``counts.generated``.
    """
    layout = RunLayout(run_dir_of(uri))
    manifest = wait_published(uri, wait_s=wait_s, poll_s=poll_s)
    expected = (manifest.get("counts") or {}).get("generated")
    seen = 0
    for entry in output_parts(manifest):
        data = _verified_part(layout, entry)
        for n, line in enumerate(data.decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise OutputIntegrityError(f"{layout.path(entry['path'])} line {n}: not JSON ({exc})") from None
            seen += 1
            yield record
    if expected is not None and seen != expected:
        raise OutputIntegrityError(f"{layout.root}: read {seen} records but the manifest counts {expected} generated")
    log.info("run %s: read %s records from %s parts", manifest.get("run_id"), seen, len(output_parts(manifest)))
