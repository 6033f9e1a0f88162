"""The storage backend interface, and what every backend shares: hashing, conflicts, helper-file names.

A backend stores objects under one kind of URI (:mod:`genbatch.io.local`, :mod:`genbatch.io.gcs`);
:mod:`genbatch.io.storage` picks one per URI, so no caller branches on ``gs://``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from genbatch.errors import ObjectConflictError, StorageError

READ_CHUNK = 4 * 1024 * 1024
CAS_MAX_ATTEMPTS = 32
SHA256_METADATA_KEY = "sha256"
TMP_RE = re.compile(r"^\.(.+)\.tmp-[0-9a-f]{32}$")  # hidden temp files next to local objects (group 1: the object)
LOCK_SUFFIX = ".lock"


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """A read found no object at the URI (also a FileNotFoundError, so either catch works)."""


class Backend(Protocol):
    """One kind of storage. Reads raise the backend's own errors inside :meth:`errors`, which turns them
    into StorageError naming the URI; writes and compare-and-swap translate their own errors."""

    def errors(self, uri: str, op: str, *, read: bool = False) -> contextlib.AbstractContextManager[None]:
        """Turn this backend's failures during ``op`` on ``uri`` into StorageError (ObjectNotFoundError on reads)."""
        ...

    def read_bytes(self, uri: str) -> bytes:
        """The whole object."""
        ...

    def exists(self, uri: str) -> bool:
        """Whether an object exists at ``uri``."""
        ...

    def size(self, uri: str) -> int:
        """The object's size in bytes."""
        ...

    def delete(self, uri: str) -> None:
        """Delete the object; a missing one is fine."""
        ...

    def open_read(self, uri: str, chunk_size: int) -> IO[bytes]:
        """A binary stream of one version of the object."""
        ...

    def list_uris(self, prefix: str) -> list[str]:
        """Every object under a directory-like prefix, sorted, helper files left out."""
        ...

    def list_versions(self, prefix: str) -> dict[str, str]:
        """Every object under the prefix (as :meth:`list_uris`) with its version: a new version means new content."""
        ...

    def version(self, uri: str) -> str:
        """One object's version (as :meth:`list_versions` gives it)."""
        ...

    def remove_stale_temp_files(self, prefix: str, *, older_than_s: float) -> int:
        """Delete temp files killed writers left under ``prefix``; returns how many."""
        ...

    def write(self, uri: str, data: bytes, sha: str, *, overwrite: bool, content_type: str | None,
              kms_key_name: str | None) -> None:
        """Write create-only (identical bytes are success) or, with ``overwrite``, replace."""
        ...

    def upload_file(self, src: Path, uri: str, *, overwrite: bool, content_type: str | None,
                    kms_key_name: str | None) -> None:
        """Stream a local file to ``uri`` with the same contract as :meth:`write`."""
        ...

    def download_into(self, uri: str, f: IO[bytes]) -> str | None:
        """Copy the object into ``f``; returns the sha256 the backend stored with it, if any."""
        ...

    def compare_and_swap_json(self, uri: str, update: Callable[[Any | None], Any], *, max_attempts: int,
                              kms_key_name: str | None) -> Any:
        """Replace a small JSON document with ``update(current)`` atomically; returns the new value."""
        ...

    def digest(self, uri: str) -> tuple[int, str]:
        """(bytes, sha256) of the object."""
        ...

    def remove_empty_dirs(self, prefix: str) -> None:
        """Remove directories left empty under ``prefix`` (and ``prefix`` itself when empty)."""
        ...


@contextlib.contextmanager
def os_errors(uri: str, op: str, *, read: bool = False) -> Iterator[None]:
    """Turn OS failures into StorageError naming the URI (ObjectNotFoundError for a missing file on reads)."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as e:
        if read:
            raise ObjectNotFoundError(f"{op} {uri}: no such file") from e
        raise StorageError(f"{op} {uri} failed: {e.strerror}") from e
    except OSError as e:
        raise StorageError(f"{op} {uri} failed: {e.strerror or e}") from e


def sha256_stream(stream: IO[bytes]) -> str:
    """sha256 of a stream, read in bounded chunks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(READ_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a local file."""
    with path.open("rb") as f:
        return sha256_stream(f)


def dumps_json(value: Any) -> str:
    """The one canonical JSON encoding, so identical values give identical bytes (and sha256)."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def conflict(uri: str, existing: str, new: str) -> ObjectConflictError:
    """The error of a create-only write that found different content under the name."""
    return ObjectConflictError(
        f"{uri} already exists with different content (existing sha256 {existing}, "
        f"new sha256 {new}); objects are create-only: write under a new name (another run id or "
        "version), or delete the stale object if it is known garbage"
    )


def is_helper_file(name: str) -> bool:
    """In-progress temp files and lock sidecars: never listed as objects."""
    return bool(TMP_RE.match(name)) or (name.startswith(".") and name.endswith(LOCK_SUFFIX))
