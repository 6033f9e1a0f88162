"""Arrivals in a watched prefix: which input batches are there now, each with a version.

A batch is a new object matching the pattern, or (with a ready marker) the folder holding the
marker. Its key hashes the URI with the version (GCS generation; locally inode, size and mtime), so
an object replaced with new content is a new batch, and the same one is never a batch twice.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass

from genbatch.io import storage


@dataclass(frozen=True)
class Arrival:
    """One input batch: what to run on (object, or folder with a marker) and its version."""

    uri: str
    version: str

    @property
    def key(self) -> str:
        """Identity of this batch at this version (what run ids and the seen-ledger use)."""
        return event_key(self.uri, self.version)

    def payload(self) -> dict[str, str]:
        """The trigger event's payload: uri, version and key."""
        return {"uri": self.uri, "version": self.version, "key": self.key}


def event_key(uri: str, version: str) -> str:
    """20 hex digits of sha256(uri, version): the same input version always gets the same key."""
    return hashlib.sha256(f"{uri}\n{version}".encode()).hexdigest()[:20]


def _listing_base(prefix: str) -> str:
    """The prefix as the listing spells the URIs under it: a local path as its walk does (``./in`` lists
    as ``in/...``, ``a//b`` as ``a/b/...``), so the pattern is matched on the path under the prefix."""
    if storage.is_gcs(prefix):
        return prefix.rstrip("/") + "/"
    style = storage.FILE_SCHEME if prefix.startswith(storage.FILE_SCHEME) else ""
    return style + str(storage.local_path(prefix)).rstrip("/") + "/"


def _relative(base: str, uri: str) -> str:
    return uri[len(base):] if uri.startswith(base) else uri


def find_arrivals(prefix: str, *, pattern: str = "*.jsonl", ready_marker: str | None = None) -> list[Arrival]:
    """The batches under ``prefix`` now, sorted by URI (one listing of the prefix).

    With ``ready_marker`` a batch is each folder holding that file (its version is the marker's: writing
    a new marker re-announces the folder); otherwise each object whose path under the prefix matches
    ``pattern``.
    """
    listed = storage.list_versions(prefix.rstrip("/") + "/")
    base = _listing_base(prefix)
    found: list[Arrival] = []
    for uri, version in sorted(listed.items()):
        rel = _relative(base, uri)
        if ready_marker is not None:
            folder, _, leaf = uri.rpartition("/")
            if leaf == ready_marker:
                found.append(Arrival(uri=folder, version=version))
        elif fnmatch.fnmatchcase(rel, pattern):
            found.append(Arrival(uri=uri, version=version))
    return found


def input_identity(uri: str) -> Arrival:
    """The batch for an input named by a message or a manual trigger: its current version (read once)."""
    return Arrival(uri=uri, version=storage.version(uri))
