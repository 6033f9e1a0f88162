"""One URI-addressed storage API for local paths and ``gs://bucket/key`` objects.

Each call picks the backend for its URI (:func:`backend_for`: :mod:`genbatch.io.local` or
:mod:`genbatch.io.gcs`), so callers never branch on ``gs://``. Every object genbatch writes is
*create-only*: a second write to the same name succeeds only when the bytes are identical (the
"response lost after a successful write, retried" case) and is a loud
:class:`~genbatch.errors.ObjectConflictError` otherwise; that turns at-least-once task execution into
effectively-once output (DESIGN.md §4). Small documents that do change (model aliases) go through
:func:`compare_and_swap_json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from genbatch.errors import StorageError
from genbatch.io.backend import (
    CAS_MAX_ATTEMPTS,
    READ_CHUNK,
    SHA256_METADATA_KEY,
    Backend,
    ObjectNotFoundError,
    dumps_json,
    sha256_file,
)
from genbatch.io.gcs import CAS_WRITE_ID_KEY, ENV_KMS_KEY, ENV_RETRY_DEADLINE, ENV_TIMEOUT, GcsBackend, reset_client
from genbatch.io.local import LocalBackend, commit, tmp_name
from genbatch.io.uris import (
    ENV_ALLOWED_PREFIXES,
    FILE_SCHEME,
    GCS_SCHEME,
    absolute_uri,
    allowed_prefixes_from_env,
    confine,
    is_gcs,
    join,
    local_path,
)

__all__ = [
    "CAS_WRITE_ID_KEY", "ENV_ALLOWED_PREFIXES", "ENV_KMS_KEY", "ENV_RETRY_DEADLINE", "ENV_TIMEOUT", "FILE_SCHEME",
    "GCS_SCHEME", "SHA256_METADATA_KEY", "ObjectNotFoundError", "absolute_uri", "allowed_prefixes_from_env", "backend_for",
    "compare_and_swap_json", "confine", "delete", "digest", "download_file", "dumps_json", "exists", "is_gcs", "iter_lines",
    "join", "list_uris", "list_versions", "local_path", "read_bytes", "read_json", "read_text", "remove_empty_dirs",
    "remove_stale_temp_files",
    "reset_client", "sha256_file", "size", "upload_file", "version", "write_bytes", "write_json", "write_text",
]

_LOCAL = LocalBackend()
_GCS = GcsBackend()


def backend_for(uri: str) -> Backend:
    """The backend that stores ``uri``: GCS for ``gs://``, the local filesystem for everything else."""
    return _GCS if is_gcs(uri) else _LOCAL


# --------------------------------------------------------------------------- reads


def read_bytes(uri: str) -> bytes:
    """Whole object as bytes (small objects; stream big ones with iter_lines/download_file)."""
    backend = backend_for(uri)
    with backend.errors(uri, "read", read=True):
        return backend.read_bytes(uri)


def read_text(uri: str) -> str:
    """Whole object decoded as UTF-8."""
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    """Whole object parsed as JSON."""
    return json.loads(read_bytes(uri))


def exists(uri: str) -> bool:
    """True when an object (a file, locally) exists at the URI."""
    backend = backend_for(uri)
    with backend.errors(uri, "exists"):
        return backend.exists(uri)


def size(uri: str) -> int:
    """Size in bytes of an existing object (checked before reading a user-supplied input)."""
    backend = backend_for(uri)
    with backend.errors(uri, "size", read=True):
        return backend.size(uri)


def remove_stale_temp_files(prefix: str, *, older_than_s: float) -> int:
    """Delete temp files a killed writer left under a local prefix (GCS uploads leave none).

    Only files older than ``older_than_s`` go, so a live writer's temp file is never touched.
    """
    return backend_for(prefix).remove_stale_temp_files(prefix, older_than_s=older_than_s)


def digest(uri: str) -> tuple[int, str]:
    """(bytes, sha256) of an object, streamed for local files."""
    backend = backend_for(uri)
    with backend.errors(uri, "read", read=True):
        return backend.digest(uri)


def remove_empty_dirs(prefix: str) -> None:
    """After deletes: drop local directories left empty under ``prefix`` (GCS has none)."""
    backend = backend_for(prefix)
    with backend.errors(prefix, "delete"):
        backend.remove_empty_dirs(prefix)


def delete(uri: str) -> None:
    """Delete the object; a missing one is fine (deletes are retried, so must be idempotent)."""
    backend = backend_for(uri)
    with backend.errors(uri, "delete"):
        backend.delete(uri)


def _split_lines(stream: IO[bytes], chunk_size: int, errors: str) -> Iterator[str]:
    """Split on b"\\n" only (JSONL rule), drop a trailing "\\r" and a leading UTF-8 BOM.

    Works on bytes so lone "\\r", U+2028 and friends inside a row never split it; memory is
    one chunk plus the longest line, and a line spanning many chunks is joined once (linear).
    """
    parts: list[bytes] = []
    first = True
    chunk_size = max(chunk_size, 3)  # the first read must see a whole BOM
    while chunk := stream.read(chunk_size):
        if first:
            first = False
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            parts.append(chunk[start:end])
            line = b"".join(parts)
            parts.clear()
            start = end + 1
            yield line.removesuffix(b"\r").decode("utf-8", errors)
        if start < len(chunk):
            parts.append(chunk[start:])
    if parts:
        yield b"".join(parts).removesuffix(b"\r").decode("utf-8", errors)


def iter_lines(uri: str, *, chunk_size: int = READ_CHUNK, errors: str = "strict") -> Iterator[str]:
    """Stream an object line by line (newline stripped) in bounded memory.

    ``errors`` is the UTF-8 decode policy; readers that must reject rather than crash on bad
    bytes can pass "surrogateescape" and validate each line themselves.
    """
    backend = backend_for(uri)
    with backend.errors(uri, "read", read=True):
        stream = backend.open_read(uri, chunk_size)
    with stream:
        it = _split_lines(stream, chunk_size, errors)
        while True:
            with backend.errors(uri, "read", read=True):
                line = next(it, None)
            if line is None:
                return
            yield line


def list_uris(prefix: str) -> list[str]:
    """Every object under a directory-like prefix, recursive and sorted, as full URIs.

    In-progress temp files and lock sidecars are left out, so a listing never shows a
    half-written object.
    """
    backend = backend_for(prefix)
    with backend.errors(prefix, "list"):
        return backend.list_uris(prefix)


def list_versions(prefix: str) -> dict[str, str]:
    """Every object under a prefix (as :func:`list_uris`) with its version (GCS generation; locally inode,
    size and mtime): what tells a new or replaced input apart from one already seen."""
    backend = backend_for(prefix)
    with backend.errors(prefix, "list"):
        return backend.list_versions(prefix)


def version(uri: str) -> str:
    """The version of one object (as :func:`list_versions` gives it); ObjectNotFoundError when there is none."""
    backend = backend_for(uri)
    with backend.errors(uri, "stat", read=True):
        return backend.version(uri)


# --------------------------------------------------------------------------- writes


def write_bytes(
    uri: str,
    data: bytes,
    *,
    overwrite: bool = False,
    content_type: str | None = None,
    kms_key_name: str | None = None,
) -> None:
    """Write an object create-only (identical re-write is success, different is a conflict).

    ``overwrite=True`` replaces unconditionally; ``kms_key_name`` (default env
    ``GENBATCH_GCS_KMS_KEY``) encrypts the GCS object with that CMEK key.
    """
    sha = hashlib.sha256(data).hexdigest()
    backend_for(uri).write(uri, data, sha, overwrite=overwrite, content_type=content_type, kms_key_name=kms_key_name)


def write_text(
    uri: str,
    text: str,
    *,
    overwrite: bool = False,
    content_type: str | None = "text/plain; charset=utf-8",
    kms_key_name: str | None = None,
) -> None:
    """Write UTF-8 text with the create-only contract of :func:`write_bytes`."""
    write_bytes(uri, text.encode("utf-8"), overwrite=overwrite, content_type=content_type, kms_key_name=kms_key_name)


def write_json(uri: str, value: Any, *, overwrite: bool = False, kms_key_name: str | None = None) -> None:
    """Write canonical JSON (sorted keys) with the create-only contract of :func:`write_bytes`."""
    write_bytes(uri, dumps_json(value).encode("utf-8"), overwrite=overwrite, content_type="application/json",
                kms_key_name=kms_key_name)


def upload_file(
    local: str | os.PathLike[str],
    uri: str,
    *,
    overwrite: bool = False,
    content_type: str | None = None,
    kms_key_name: str | None = None,
) -> None:
    """Copy a (big) local file to a URI with the create-only contract, streaming it."""
    backend_for(uri).upload_file(Path(local), uri, overwrite=overwrite, content_type=content_type,
                                 kms_key_name=kms_key_name)


def download_file(uri: str, local: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Copy an object to a local file (temp file + link, so a crash leaves no partial file).

    The local file is create-only too; on GCS the content is checked against the stored
    sha256 before it is published.
    """
    dest = Path(local)
    backend = backend_for(uri)
    with backend.errors(uri, "download", read=True):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(dest)
        try:
            with tmp.open("xb") as f:
                expected = backend.download_into(uri, f)
                f.flush()
                os.fsync(f.fileno())
            sha = sha256_file(tmp)
            if expected and expected != sha:
                raise StorageError(
                    f"download {uri}: content sha256 {sha} does not match the stored "
                    f"sha256 {expected}; the object is corrupt, re-upload it"
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        commit(tmp, dest, sha, str(dest), overwrite)


def compare_and_swap_json(
    uri: str,
    update: Callable[[Any | None], Any],
    *,
    max_attempts: int = CAS_MAX_ATTEMPTS,
    kms_key_name: str | None = None,
) -> Any:
    """Atomically replace a small JSON document with ``update(current)`` and return it.

    ``current`` is None when the document does not exist yet. ``update`` may be called more
    than once (after a lost race) so it must be a pure function of its argument. A result
    equal to the current value writes nothing.
    """
    return backend_for(uri).compare_and_swap_json(uri, update, max_attempts=max_attempts, kms_key_name=kms_key_name)
