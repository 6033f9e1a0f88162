"""Addressing: which backend a URI names, joining paths in its style, and confining user-supplied URIs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from genbatch.errors import PathNotAllowedError, StorageError

GCS_SCHEME = "gs://"
FILE_SCHEME = "file://"
ENV_ALLOWED_PREFIXES = "GENBATCH_ALLOWED_PREFIXES"


def is_gcs(uri: str) -> bool:
    """True for ``gs://`` URIs; everything else is a local path (plain or ``file://``)."""
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """Split ``gs://bucket/key`` into (bucket, key); the key may be empty for a bucket root."""
    rest = uri[len(GCS_SCHEME) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} has no bucket name; expected gs://<bucket>/<key>")
    return bucket, key


def absolute_uri(uri: str) -> str:
    """``uri`` as another machine can name it: ``gs://`` as is, a local path as an absolute ``file://`` URI."""
    return uri if is_gcs(uri) else local_path(uri).resolve().as_uri()


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
        _, key = split_gcs(uri)
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
