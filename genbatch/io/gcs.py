"""Google Cloud Storage through the official client: create-only writes with ``if_generation_match=0``
and the content sha256 in the object metadata, so a retry that gets 412 can tell its own lost response
(identical content: success) from another writer (a conflict) without downloading."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from genbatch.errors import StorageError
from genbatch.io.backend import (
    READ_CHUNK,
    SHA256_METADATA_KEY,
    ObjectNotFoundError,
    conflict,
    dumps_json,
    is_helper_file,
    os_errors,
    sha256_file,
    sha256_stream,
)
from genbatch.io.uris import GCS_SCHEME, split_gcs

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client

logger = logging.getLogger("genbatch.io.storage")

EMULATOR_PROJECT = "genbatch-local"
ENV_KMS_KEY = "GENBATCH_GCS_KMS_KEY"
ENV_RETRY_DEADLINE = "GENBATCH_GCS_RETRY_DEADLINE_S"
ENV_TIMEOUT = "GENBATCH_GCS_TIMEOUT_S"
CAS_WRITE_ID_KEY = "genbatch-write-id"

_client_lock = threading.Lock()
_client_cache: tuple[int, Client] | None = None


def client() -> Client:
    """One cached client per process (re-created after fork: sockets must not be shared)."""
    global _client_cache
    with _client_lock:
        pid = os.getpid()
        if _client_cache is not None and _client_cache[0] == pid:
            return _client_cache[1]
        from google.cloud import storage as gcs

        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials

            made = gcs.Client(project=EMULATOR_PROJECT, credentials=AnonymousCredentials())
            logger.info("using GCS emulator at %s", os.environ["STORAGE_EMULATOR_HOST"])
        else:
            made = gcs.Client()
        _client_cache = (pid, made)
        return made


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
    bucket, key = split_gcs(uri)
    if not key:
        raise StorageError(f"{uri} names a bucket, not an object")
    return client().bucket(bucket), key


def _kms(kms_key_name: str | None) -> str | None:
    return kms_key_name if kms_key_name is not None else (os.environ.get(ENV_KMS_KEY) or None)


@contextlib.contextmanager
def gcs_errors(uri: str, op: str, *, read: bool = False) -> Iterator[None]:
    """Turn client/OS failures into StorageError naming the URI and status.

    Non-retryable statuses (400/403/404) reach here on the first attempt because the retry
    policy only retries transient ones, so a bad request fails fast instead of storming.
    """
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.resumable_media import common as rm_common
    from requests import exceptions as req_exc

    # OS errors (a local source file of an upload, say) fall through to os_errors, after the transport
    # errors below: requests' exceptions are OSErrors too and must keep their own message.
    with os_errors(uri, op, read=read):
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


def _stored_sha256(blob: Blob) -> str:
    """sha256 of a stored object: from metadata when we wrote it, else by streaming it."""
    meta = blob.metadata or {}
    if meta.get(SHA256_METADATA_KEY):
        return str(meta[SHA256_METADATA_KEY])
    with blob.open("rb", chunk_size=READ_CHUNK, retry=_retry()) as f:
        return sha256_stream(f)


def _resolve_existing(uri: str, sha: str) -> None:
    """After a 412 on a create-only write: identical content is success, else conflict."""
    bucket, key = _bucket(uri)
    blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
    if blob is None:
        # Deleted between the 412 and now; the caller may retry, but we do not guess.
        raise StorageError(f"create-only write of {uri} got 412 but the object is gone now; retry the write")
    existing = _stored_sha256(blob)
    if existing != sha:
        raise conflict(uri, existing, sha)
    logger.info("create-only write of %s found identical content; ok", uri)


def _blob_for_write(uri: str, sha: str, kms_key_name: str | None) -> Blob:
    bucket, key = _bucket(uri)
    blob = bucket.blob(key, kms_key_name=_kms(kms_key_name))
    blob.metadata = {SHA256_METADATA_KEY: sha}
    return blob


def _write(uri: str, upload: Callable[[Blob, int | None], None], sha: str, overwrite: bool,
           kms_key_name: str | None) -> None:
    from google.api_core.exceptions import PreconditionFailed

    with gcs_errors(uri, "write"):
        blob = _blob_for_write(uri, sha, kms_key_name)
        try:
            # if_generation_match=0 makes the write conditionally idempotent, so the client's
            # retry of a lost response is safe: it comes back as 412 and is resolved below.
            upload(blob, None if overwrite else 0)
        except PreconditionFailed:
            if overwrite:
                raise
            _resolve_existing(uri, sha)


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * random.random())


class GcsBackend:
    """``gs://bucket/key`` objects."""

    def errors(self, uri: str, op: str, *, read: bool = False) -> contextlib.AbstractContextManager[None]:
        """Client, transport and OS failures as StorageError."""
        return gcs_errors(uri, op, read=read)

    def read_bytes(self, uri: str) -> bytes:
        """The whole object."""
        bucket, key = _bucket(uri)
        data: bytes = bucket.blob(key).download_as_bytes(retry=_retry(), timeout=_timeout())
        return data

    def exists(self, uri: str) -> bool:
        """Whether the object exists."""
        bucket, key = _bucket(uri)
        return bool(bucket.blob(key).exists(retry=_retry(), timeout=_timeout()))

    def size(self, uri: str) -> int:
        """The object's size in bytes."""
        bucket, key = _bucket(uri)
        blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
        if blob is None:
            raise ObjectNotFoundError(f"size {uri}: no such object")
        return int(blob.size or 0)

    def delete(self, uri: str) -> None:
        """Delete the object; a missing one is fine (deletes are retried, so must be idempotent)."""
        from google.api_core.exceptions import NotFound

        bucket, key = _bucket(uri)
        with contextlib.suppress(NotFound):
            bucket.blob(key).delete(retry=_retry(), timeout=_timeout())

    def open_read(self, uri: str, chunk_size: int) -> IO[bytes]:
        """A ranged-read stream pinned to the current generation: a replaced object fails the read (412)
        instead of mixing two versions into one stream."""
        bucket, key = _bucket(uri)
        blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
        if blob is None:
            raise ObjectNotFoundError(f"read {uri}: no such object (HTTP 404)")
        stream: IO[bytes] = blob.open("rb", chunk_size=chunk_size, retry=_retry(), if_generation_match=blob.generation)
        return stream

    def list_uris(self, prefix: str) -> list[str]:
        """Every object under the prefix, as full URIs, sorted."""
        bucket_name, key = split_gcs(prefix)
        key_prefix = key if (not key or key.endswith("/")) else key + "/"
        blobs = client().list_blobs(bucket_name, prefix=key_prefix, retry=_retry(), timeout=_timeout())
        names = [b.name for b in blobs if not b.name.endswith("/") and not is_helper_file(b.name.rsplit("/", 1)[-1])]
        return sorted(f"{GCS_SCHEME}{bucket_name}/{n}" for n in names)

    def list_versions(self, prefix: str) -> dict[str, str]:
        """Every object under the prefix with its generation (GCS's own version number), in one listing."""
        bucket_name, key = split_gcs(prefix)
        key_prefix = key if (not key or key.endswith("/")) else key + "/"
        blobs = client().list_blobs(bucket_name, prefix=key_prefix, retry=_retry(), timeout=_timeout())
        return {f"{GCS_SCHEME}{bucket_name}/{b.name}": str(b.generation) for b in blobs
                if not b.name.endswith("/") and not is_helper_file(b.name.rsplit("/", 1)[-1])}

    def version(self, uri: str) -> str:
        """The object's generation."""
        bucket, key = _bucket(uri)
        blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
        if blob is None:
            raise ObjectNotFoundError(f"stat {uri}: no such object")
        return str(blob.generation)

    def remove_stale_temp_files(self, prefix: str, *, older_than_s: float) -> int:
        """GCS uploads leave no temp objects."""
        return 0

    def write(self, uri: str, data: bytes, sha: str, *, overwrite: bool, content_type: str | None,
              kms_key_name: str | None) -> None:
        """One conditional request (``if_generation_match=0`` unless overwriting)."""
        def upload(blob: Blob, gen: int | None) -> None:
            blob.upload_from_string(
                data,
                content_type=content_type or "application/octet-stream",
                if_generation_match=gen,
                retry=_retry(),
                timeout=_timeout(),
            )

        _write(uri, upload, sha, overwrite, kms_key_name)

    def upload_file(self, src: Path, uri: str, *, overwrite: bool, content_type: str | None,
                    kms_key_name: str | None) -> None:
        """The existing object is checked first: a retried upload of multi-GB weights then costs one
        metadata call instead of a full re-upload."""
        with gcs_errors(uri, "upload"):
            sha = sha256_file(src)
            if not overwrite:
                bucket, key = _bucket(uri)
                if bucket.get_blob(key, retry=_retry(), timeout=_timeout()) is not None:
                    _resolve_existing(uri, sha)
                    return

        def upload(blob: Blob, gen: int | None) -> None:
            blob.upload_from_filename(
                str(src),
                content_type=content_type,
                if_generation_match=gen,
                retry=_retry(),
                timeout=_timeout(),
            )

        _write(uri, upload, sha, overwrite, kms_key_name)

    def download_into(self, uri: str, f: IO[bytes]) -> str | None:
        """Copy the object; returns the sha256 stored in its metadata (None when a foreign writer made it)."""
        bucket, key = _bucket(uri)
        blob = bucket.get_blob(key, retry=_retry(), timeout=_timeout())
        if blob is None:
            raise ObjectNotFoundError(f"download {uri}: no such object (HTTP 404)")
        blob.download_to_file(f, retry=_retry(), timeout=_timeout())
        expected = (blob.metadata or {}).get(SHA256_METADATA_KEY)
        return str(expected) if expected else None

    def digest(self, uri: str) -> tuple[int, str]:
        """(bytes, sha256) of the content, read in one request."""
        data = self.read_bytes(uri)
        return len(data), hashlib.sha256(data).hexdigest()

    def remove_empty_dirs(self, prefix: str) -> None:
        """GCS has no directories."""

    def compare_and_swap_json(self, uri: str, update: Callable[[Any | None], Any], *, max_attempts: int,
                              kms_key_name: str | None) -> Any:
        """Conditional on the generation read, so retries are safe and a racing writer makes exactly one
        of us fail with 412; a unique write id tells our own applied write from another's."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        for attempt in range(1, max_attempts + 1):
            with gcs_errors(uri, "compare-and-swap"):
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
                out = _blob_for_write(uri, hashlib.sha256(data).hexdigest(), kms_key_name)
                write_id = uuid.uuid4().hex
                out.metadata = {**(out.metadata or {}), CAS_WRITE_ID_KEY: write_id}
                try:
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
