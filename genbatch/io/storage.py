"""One URI-addressed storage API for local paths and ``gs://bucket/key`` objects.

Every object genbatch writes is *create-only*: a second write to the same name succeeds only
when the bytes are identical (the "response lost after a successful write, retried" case) and
is a loud :class:`~genbatch.errors.ObjectConflictError` otherwise. That is what turns
at-least-once task execution into effectively-once output (DESIGN.md section 4). Locally the
guarantee comes from ``os.link`` of a fully written, fsynced temp file (O_EXCL semantics); on
GCS from ``if_generation_match=0``, with a sha256 of the content kept in the object metadata
so a retry can compare without downloading.

Small documents that do change (model aliases) go through :func:`compare_and_swap_json`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from genbatch.errors import ObjectConflictError, PathNotAllowedError, StorageError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client

logger = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"
EMULATOR_PROJECT = "genbatch-local"
ENV_KMS_KEY = "GENBATCH_GCS_KMS_KEY"
ENV_ALLOWED_PREFIXES = "GENBATCH_ALLOWED_PREFIXES"
ENV_RETRY_DEADLINE = "GENBATCH_GCS_RETRY_DEADLINE_S"
ENV_TIMEOUT = "GENBATCH_GCS_TIMEOUT_S"
SHA256_METADATA_KEY = "sha256"

_READ_CHUNK = 4 * 1024 * 1024
_CAS_MAX_ATTEMPTS = 32
_LOCK_TIMEOUT_S = 60.0
# Hidden helper files next to local objects: never reported by list_uris.
_TMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")
_LOCK_SUFFIX = ".lock"
CAS_WRITE_ID_KEY = "genbatch-write-id"

_client_lock = threading.Lock()
_client_cache: tuple[int, Client] | None = None


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """A read found no object at the URI (also a FileNotFoundError, so either catch works)."""


# --------------------------------------------------------------------------- addressing


def is_gcs(uri: str) -> bool:
    """True for ``gs://`` URIs; everything else is a local path (plain or ``file://``)."""
    return uri.startswith(GCS_SCHEME)


def _split_gcs(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/key`` into (bucket, key); the key may be empty for a bucket root."""
    rest = uri[len(GCS_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name; expected gs://<bucket>/<key>")
    return bucket, key


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or ``file://``); GCS URIs are refused."""
    if is_gcs(uri):
        raise StorageError(f"{uri} is a GCS URI, not a local path; use download_file() first")
    return Path(uri.removeprefix(FILE_SCHEME))


def join(base: str, *parts: str) -> str:
    """Join path parts onto a base URI, keeping its style (gs://, file:// or plain path).

    Leading/trailing slashes of the parts are stripped so a part can never re-root the path.
    """
    clean = [p.strip("/") for p in parts if p.strip("/")]
    if is_gcs(base):
        head = base.rstrip("/")
        if head == GCS_SCHEME.rstrip("/"):
            raise StorageError(f"{base!r} has no bucket name; expected gs://<bucket>/<key>")
        return "/".join([head, *clean])
    prefix = FILE_SCHEME if base.startswith(FILE_SCHEME) else ""
    return prefix + str(local_path(base).joinpath(*clean))


# --------------------------------------------------------------------------- GCS client


def _client() -> Client:
    """One cached client per process (re-created after fork: sockets must not be shared)."""
    global _client_cache
    with _client_lock:
        pid = os.getpid()
        if _client_cache is not None and _client_cache[0] == pid:
            return _client_cache[1]
        from google.cloud import storage as gcs

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            client = gcs.Client(project=EMULATOR_PROJECT, credentials=AnonymousCredentials())
            logger.info("using GCS emulator at %s", os.environ["STORAGE_EMULATOR_HOST"])
        else:
            client = gcs.Client()
        _client_cache = (pid, client)
        return client


def reset_client() -> None:
    """Forget the cached client so the next call re-reads the environment (tests, emulator)."""
    global _client_cache
    with _client_lock:
        _client_cache = None


def _retry() -> Any:
    """The client's own retry policy (408/429/5xx, connection errors), deadline configurable."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = os.environ.get(ENV_RETRY_DEADLINE)
    if deadline:
        return DEFAULT_RETRY.with_timeout(float(deadline))
    return DEFAULT_RETRY


def _timeout() -> float:
    """Per-request timeout: a stalled connection must turn into a retry, not a hang."""
    return float(os.environ.get(ENV_TIMEOUT, "60"))


def _bucket(uri: str) -> tuple[Bucket, str]:
    bucket, key = _split_gcs(uri)
    if not key:
        raise StorageError(f"{uri} names a bucket, not an object")
    return _client().bucket(bucket), key


def _kms(kms_key_name: str | None) -> str | None:
    return kms_key_name if kms_key_name is not None else (os.environ.get(ENV_KMS_KEY) or None)


@contextlib.contextmanager
def _errors(uri: str, op: str, *, read: bool = False) -> Iterator[None]:
    """Turn client/OS failures into StorageError naming the URI and status.

    Non-retryable statuses (400/403/404) reach here on the first attempt because the retry
    policy only retries transient ones, so a bad request fails fast instead of storming.
    """
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.resumable_media import common as rm_common
    from requests import exceptions as req_exc

    try:
        yield
    except StorageError:
        raise
    except gexc.NotFound as e:
        if read:
            raise ObjectNotFoundError(f"{op} {uri}: no such object (HTTP 404)") from e
        raise StorageError(f"{op} {uri} failed: HTTP 404 {e.message}; check that the bucket exists") from e
    except gexc.GoogleAPICallError as e:
        raise StorageError(f"{op} {uri} failed: HTTP {e.code} {e.message}") from e
    except gexc.RetryError as e:
        raise StorageError(
            f"{op} {uri} failed: retries exhausted ({e.cause!r}); raise {ENV_RETRY_DEADLINE} "
            "if the service is slow, or check connectivity"
        ) from e
    except rm_common.DataCorruption as e:
        raise StorageError(f"{op} {uri} failed: checksum mismatch in transfer") from e
    except rm_common.InvalidResponse as e:
        status = getattr(e.response, "status_code", "?")
        raise StorageError(f"{op} {uri} failed: HTTP {status}") from e
    except (req_exc.RequestException, auth_exc.GoogleAuthError) as e:
        raise StorageError(f"{op} {uri} failed: {type(e).__name__}") from e
    except FileNotFoundError as e:
        if read:
            raise ObjectNotFoundError(f"{op} {uri}: no such file") from e
        raise StorageError(f"{op} {uri} failed: {e.strerror}") from e
    except OSError as e:
        raise StorageError(f"{op} {uri} failed: {e.strerror or e}") from e


# --------------------------------------------------------------------------- hashing


def _sha256_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(_READ_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file, read in chunks so a large file (model weights) is never held in memory whole."""
    with path.open("rb") as f:
        return _sha256_stream(f)


def _gcs_sha256(blob: Blob) -> str:
    """sha256 of a stored object: from metadata when we wrote it, else by streaming it."""
    meta = blob.metadata or {}
    if meta.get(SHA256_METADATA_KEY):
        return str(meta[SHA256_METADATA_KEY])
    with blob.open("rb", chunk_size=_READ_CHUNK, retry=_retry()) as f:
        return _sha256_stream(f)


def _conflict(uri: str, existing: str, new: str) -> ObjectConflictError:
    return ObjectConflictError(
        f"{uri} already exists with different content (existing sha256 {existing}, "
        f"new sha256 {new}); objects are create-only: write under a new name (new run_id or "
        "version), delete the stale object if it is known garbage, or pass overwrite=True "
        "where replacing is intended"
    )


# --------------------------------------------------------------------------- reads


def read_bytes(uri: str) -> bytes:
    """Whole object as bytes (small objects; stream big ones with iter_lines/download_file)."""
    with _errors(uri, "read", read=True):
        if is_gcs(uri):
            bucket, key = _bucket(uri)
            data: bytes = bucket.blob(key).download_as_bytes(retry=_retry(), timeout=_timeout())
            return data
        return local_path(uri).read_bytes()


def read_text(uri: str) -> str:
    """Whole object decoded as UTF-8."""
    return read_bytes(uri).decode("utf-8")


def read_json(uri: str) -> Any:
    """Whole object parsed as JSON."""
    return json.loads(read_bytes(uri))


def exists(uri: str) -> bool:
    """True when an object (a file, locally) exists at the URI."""
    with _errors(uri, "exists"):
        if is_gcs(uri):
            bucket, key = _bucket(uri)
            return bool(bucket.blob(key).exists(retry=_retry(), timeout=_timeout()))
        return local_path(uri).is_file()


def size(uri: str) -> int:
    """Size in bytes of an existing object (checked before reading a user-supplied input)."""
    with _errors(uri, "size", read=True):
        if is_gcs(uri):
            bucket, key = _bucket(uri)
            blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
            if blob is None:
                raise ObjectNotFoundError(f"size {uri}: no such object")
            return int(blob.size or 0)
        return local_path(uri).stat().st_size


def remove_stale_temp_files(prefix: str, *, older_than_s: float) -> int:
    """Delete temp files a killed writer left under a local prefix (GCS uploads leave none).

    Only files older than ``older_than_s`` go, so a live writer's temp file is never touched.
    """
    if is_gcs(prefix):
        return 0
    root = local_path(prefix)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for path in root.rglob(".*"):
        if path.is_file() and _TMP_RE.match(path.name) and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def delete(uri: str) -> None:
    """Delete the object; a missing one is fine (deletes are retried, so must be idempotent)."""
    from google.api_core.exceptions import NotFound

    with _errors(uri, "delete"):
        if is_gcs(uri):
            bucket, key = _bucket(uri)
            with contextlib.suppress(NotFound):
                bucket.blob(key).delete(retry=_retry(), timeout=_timeout())
            return
        with contextlib.suppress(FileNotFoundError):
            local_path(uri).unlink()


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


def iter_lines(uri: str, *, chunk_size: int = _READ_CHUNK, errors: str = "strict") -> Iterator[str]:
    """Stream an object line by line (newline stripped) in bounded memory.

    ``errors`` is the UTF-8 decode policy; readers that must reject rather than crash on bad
    bytes can pass "surrogateescape" and validate each line themselves.
    """
    with _errors(uri, "read", read=True):
        if is_gcs(uri):
            bucket, key = _bucket(uri)
            blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
            if blob is None:
                raise ObjectNotFoundError(f"read {uri}: no such object (HTTP 404)")
            # Every ranged read is pinned to this generation, so a replaced object fails the
            # read (412) instead of mixing two versions into one stream.
            stream: IO[bytes] = blob.open("rb", chunk_size=chunk_size, retry=_retry(), if_generation_match=blob.generation)
        else:
            stream = local_path(uri).open("rb")
    with stream:
        it = _split_lines(stream, chunk_size, errors)
        while True:
            with _errors(uri, "read", read=True):
                line = next(it, None)
            if line is None:
                return
            yield line


def _is_helper_file(name: str) -> bool:
    return bool(_TMP_RE.match(name)) or (name.startswith(".") and name.endswith(_LOCK_SUFFIX))


def list_uris(prefix: str) -> list[str]:
    """Every object under a directory-like prefix, recursive and sorted, as full URIs.

    In-progress temp files and lock sidecars are left out, so a listing never shows a
    half-written object.
    """
    with _errors(prefix, "list"):
        if is_gcs(prefix):
            bucket_name, key = _split_gcs(prefix)
            key_prefix = key if (not key or key.endswith("/")) else key + "/"
            blobs = _client().list_blobs(bucket_name, prefix=key_prefix, retry=_retry(), timeout=_timeout())
            names = [b.name for b in blobs if not b.name.endswith("/") and not _is_helper_file(b.name.rsplit("/", 1)[-1])]
            return sorted(f"{GCS_SCHEME}{bucket_name}/{n}" for n in names)
        root = local_path(prefix)
        style = FILE_SCHEME if prefix.startswith(FILE_SCHEME) else ""
        if not root.is_dir():
            return []
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if not _is_helper_file(name):
                    out.append(style + os.path.join(dirpath, name))
        return sorted(out)


# --------------------------------------------------------------------------- local writes


def _fsync_dir(path: Path) -> None:
    """Make a link/rename durable: without this a crash can lose the new directory entry."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")


def _local_commit(tmp: Path, final: Path, sha: str, uri: str, overwrite: bool) -> None:
    """Publish a fully written temp file at ``final``: link (create-only) or replace."""
    try:
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                existing = sha256_file(final)
                if existing != sha:
                    raise _conflict(uri, existing, sha) from None
                logger.info("create-only write of %s found identical content; ok", uri)
        _fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _writer(data: bytes) -> Callable[[IO[bytes]], None]:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


def _local_write(uri: str, write: Callable[[IO[bytes]], None], sha: str, overwrite: bool) -> None:
    final = local_path(uri)
    if final.name in ("", ".", ".."):
        raise StorageError(f"{uri} does not name a file")
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.is_file():
        # Cheap early answer for the common retry case; the link below stays the real guard.
        existing = sha256_file(final)
        if existing != sha:
            raise _conflict(uri, existing, sha)
        return
    tmp = _tmp_name(final)
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _local_commit(tmp, final, sha, uri, overwrite)


# --------------------------------------------------------------------------- GCS writes


def _gcs_resolve_existing(uri: str, sha: str) -> None:
    """After a 412 on a create-only write: identical content is success, else conflict."""
    bucket, key = _bucket(uri)
    blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
    if blob is None:
        # Deleted between the 412 and now; the caller may retry, but we do not guess.
        raise StorageError(f"create-only write of {uri} got 412 but the object is gone now; retry the write")
    existing = _gcs_sha256(blob)
    if existing != sha:
        raise _conflict(uri, existing, sha)
    logger.info("create-only write of %s found identical content; ok", uri)


def _gcs_blob_for_write(uri: str, sha: str, kms_key_name: str | None) -> Blob:
    bucket, key = _bucket(uri)
    blob = bucket.blob(key, kms_key_name=_kms(kms_key_name))
    blob.metadata = {SHA256_METADATA_KEY: sha}
    return blob


def _gcs_write(
    uri: str,
    upload: Callable[[Blob, int | None], None],
    sha: str,
    overwrite: bool,
    kms_key_name: str | None,
) -> None:
    from google.api_core.exceptions import PreconditionFailed

    with _errors(uri, "write"):
        blob = _gcs_blob_for_write(uri, sha, kms_key_name)
        try:
            # if_generation_match=0 makes the write conditionally idempotent, so the client's
            # retry of a lost response is safe: it comes back as 412 and is resolved below.
            upload(blob, None if overwrite else 0)
        except PreconditionFailed:
            if overwrite:
                raise
            _gcs_resolve_existing(uri, sha)


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
    if is_gcs(uri):

        def upload(blob: Blob, gen: int | None) -> None:
            blob.upload_from_string(
                data,
                content_type=content_type or "application/octet-stream",
                if_generation_match=gen,
                retry=_retry(),
                timeout=_timeout(),
            )

        _gcs_write(uri, upload, sha, overwrite, kms_key_name)
        return
    with _errors(uri, "write"):
        _local_write(uri, _writer(data), sha, overwrite)


def write_text(
    uri: str,
    text: str,
    *,
    overwrite: bool = False,
    content_type: str | None = "text/plain; charset=utf-8",
    kms_key_name: str | None = None,
) -> None:
    """Write UTF-8 text with the create-only contract of :func:`write_bytes`."""
    write_bytes(
        uri,
        text.encode("utf-8"),
        overwrite=overwrite,
        content_type=content_type,
        kms_key_name=kms_key_name,
    )


def dumps_json(value: Any) -> str:
    """The one canonical JSON encoding, so identical values give identical bytes (and sha256)."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(
    uri: str,
    value: Any,
    *,
    overwrite: bool = False,
    kms_key_name: str | None = None,
) -> None:
    """Write canonical JSON (sorted keys) with the create-only contract of :func:`write_bytes`."""
    write_bytes(
        uri,
        dumps_json(value).encode("utf-8"),
        overwrite=overwrite,
        content_type="application/json",
        kms_key_name=kms_key_name,
    )


def upload_file(
    local: str | os.PathLike[str],
    uri: str,
    *,
    overwrite: bool = False,
    content_type: str | None = None,
    kms_key_name: str | None = None,
) -> None:
    """Copy a (big) local file to a URI with the create-only contract, streaming it.

    On GCS the existing object is checked first: a retried upload of multi-GB weights then
    costs one metadata call instead of a full re-upload.
    """
    src = Path(local)
    with _errors(uri, "upload"):
        sha = sha256_file(src)
        if not is_gcs(uri):

            def copy(f: IO[bytes]) -> None:
                with src.open("rb") as s:
                    shutil.copyfileobj(s, f, _READ_CHUNK)

            _local_write(uri, copy, sha, overwrite)
            return
        if not overwrite:
            bucket, key = _bucket(uri)
            if bucket.get_blob(key, retry=_retry(), timeout=_timeout()) is not None:
                _gcs_resolve_existing(uri, sha)
                return

    def upload(blob: Blob, gen: int | None) -> None:
        blob.upload_from_filename(
            str(src),
            content_type=content_type,
            if_generation_match=gen,
            retry=_retry(),
            timeout=_timeout(),
        )

    _gcs_write(uri, upload, sha, overwrite, kms_key_name)


def download_file(uri: str, local: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Copy an object to a local file (temp file + link, so a crash leaves no partial file).

    The local file is create-only too; on GCS the content is checked against the stored
    sha256 before it is published.
    """
    dest = Path(local)
    with _errors(uri, "download", read=True):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(dest)
        try:
            with tmp.open("xb") as f:
                if is_gcs(uri):
                    bucket, key = _bucket(uri)
                    blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
                    if blob is None:
                        raise ObjectNotFoundError(f"download {uri}: no such object (HTTP 404)")
                    blob.download_to_file(f, retry=_retry(), timeout=_timeout())
                    expected = (blob.metadata or {}).get(SHA256_METADATA_KEY)
                else:
                    with local_path(uri).open("rb") as s:
                        shutil.copyfileobj(s, f, _READ_CHUNK)
                    expected = None
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
        _local_commit(tmp, dest, sha, str(dest), overwrite)


# --------------------------------------------------------------------------- compare-and-swap


def _lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}{_LOCK_SUFFIX}")


@contextlib.contextmanager
def _flock(path: Path, uri: str) -> Iterator[None]:
    """Exclusive lock on a sidecar file; flock is per open file, so threads exclude too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as f:
        deadline = time.monotonic() + _LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise StorageError(f"could not lock {uri} within {_LOCK_TIMEOUT_S:.0f}s; another process holds {path}") from e
                time.sleep(0.005 + random.random() * 0.01)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def compare_and_swap_json(
    uri: str,
    update: Callable[[Any | None], Any],
    *,
    max_attempts: int = _CAS_MAX_ATTEMPTS,
    kms_key_name: str | None = None,
) -> Any:
    """Atomically replace a small JSON document with ``update(current)`` and return it.

    ``current`` is None when the document does not exist yet. ``update`` may be called more
    than once (after a lost race) so it must be a pure function of its argument. A result
    equal to the current value writes nothing.
    """
    if not is_gcs(uri):
        final = local_path(uri)
        with _errors(uri, "compare-and-swap"), _flock(_lock_path(final), uri):
            current = json.loads(final.read_bytes()) if final.is_file() else None
            new = update(current)
            if final.is_file() and new == current:
                return new
            data = dumps_json(new).encode("utf-8")
            _local_write(uri, _writer(data), hashlib.sha256(data).hexdigest(), True)
            return new

    from google.api_core.exceptions import NotFound, PreconditionFailed

    for attempt in range(1, max_attempts + 1):
        with _errors(uri, "compare-and-swap"):
            bucket, key = _bucket(uri)
            blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
            if blob is None:
                generation, current = 0, None
            else:
                generation = int(blob.generation)
                try:
                    current = json.loads(blob.download_as_bytes(retry=_retry(), timeout=_timeout()))
                except NotFound:
                    current = None  # replaced and that generation deleted: lost race
                    _backoff(attempt)
                    continue
            new = update(current)
            if blob is not None and new == current:
                return new
            data = dumps_json(new).encode("utf-8")
            out = _gcs_blob_for_write(uri, hashlib.sha256(data).hexdigest(), kms_key_name)
            # A unique id on our write: if the response is lost and the retry gets 412, the stored
            # object tells whether that 412 is our own applied write (success) or another writer's.
            write_id = uuid.uuid4().hex
            out.metadata = {**(out.metadata or {}), CAS_WRITE_ID_KEY: write_id}
            try:
                # Conditional on the generation we read, so retries are safe and a racing
                # writer makes exactly one of us fail with 412.
                out.upload_from_string(
                    data,
                    content_type="application/json",
                    if_generation_match=generation,
                    retry=_retry(),
                    timeout=_timeout(),
                )
                return new
            except PreconditionFailed:
                stored = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
                if stored is not None and (stored.metadata or {}).get(CAS_WRITE_ID_KEY) == write_id:
                    return new  # our write was applied; only its response was lost
                logger.info("compare-and-swap of %s lost a race (attempt %s)", uri, attempt)
        _backoff(attempt)
    raise StorageError(
        f"compare-and-swap of {uri} lost the race {max_attempts} times; too many concurrent writers on one document"
    )


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * random.random())


# --------------------------------------------------------------------------- confinement


def confine(uri: str, allowed_prefixes: Sequence[str]) -> str:
    """Normalise a user-supplied URI and refuse it unless it lies under an allowed prefix.

    Local paths become absolute and resolved (symlinks and ``..`` cannot escape); gs:// keys
    with a ``..`` segment and any NUL are refused outright. No prefixes means no restriction.
    """
    if "\x00" in uri:
        raise PathNotAllowedError(f"{uri!r} contains a NUL byte; refusing it")
    normal = _normalise(uri)
    if not allowed_prefixes:
        return normal
    for prefix in allowed_prefixes:
        if _under(normal, _normalise(prefix)):
            return normal
    raise PathNotAllowedError(
        f"{normal!r} is outside the allowed prefixes {list(allowed_prefixes)!r}; use a path "
        f"under one of them or extend {ENV_ALLOWED_PREFIXES}"
    )


def _normalise(uri: str) -> str:
    if "\x00" in uri:
        raise PathNotAllowedError(f"{uri!r} contains a NUL byte; refusing it")
    if is_gcs(uri):
        _, key = _split_gcs(uri)
        if ".." in key.split("/"):
            raise PathNotAllowedError(f"{uri!r} has a '..' segment; refusing it")
        return uri
    return str(local_path(uri).resolve())


def _under(path: str, prefix: str) -> bool:
    if is_gcs(path) != is_gcs(prefix):
        return False
    if is_gcs(path):
        head = prefix.rstrip("/")
        return path == head or path.startswith(head + "/")
    return Path(path).is_relative_to(Path(prefix))


def allowed_prefixes_from_env() -> list[str]:
    """Allowed prefixes from ``GENBATCH_ALLOWED_PREFIXES`` (comma separated); [] = no limit."""
    raw = os.environ.get(ENV_ALLOWED_PREFIXES, "")
    return [p.strip() for p in raw.split(",") if p.strip()]
