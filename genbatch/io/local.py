"""Local storage: a fully written, fsynced temp file linked into place (O_EXCL semantics) makes every
write create-only and atomic; compare-and-swap holds an flock on a sidecar file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from genbatch.errors import StorageError
from genbatch.io.backend import (
    LOCK_SUFFIX,
    READ_CHUNK,
    TMP_RE,
    conflict,
    dumps_json,
    is_helper_file,
    os_errors,
    sha256_file,
)
from genbatch.io.uris import FILE_SCHEME, local_path

logger = logging.getLogger("genbatch.io.storage")

_LOCK_TIMEOUT_S = 60.0


def fsync_dir(path: Path) -> None:
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


def tmp_name(final: Path) -> Path:
    """A hidden, unique temp name beside ``final`` (never listed, swept when stale)."""
    return final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")


def commit(tmp: Path, final: Path, sha: str, uri: str, overwrite: bool) -> None:
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
                    raise conflict(uri, existing, sha) from None
                logger.info("create-only write of %s found identical content; ok", uri)
        fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _writer(data: bytes) -> Callable[[IO[bytes]], None]:
    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


def _write_with(uri: str, write: Callable[[IO[bytes]], None], sha: str, overwrite: bool) -> None:
    final = local_path(uri)
    if final.name in ("", ".", ".."):
        raise StorageError(f"{uri} does not name a file")
    final.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and final.is_file():
        # Cheap early answer for the common retry case; the link below stays the real guard.
        existing = sha256_file(final)
        if existing != sha:
            raise conflict(uri, existing, sha)
        return
    tmp = tmp_name(final)
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    commit(tmp, final, sha, uri, overwrite)


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


class LocalBackend:
    """Local paths (plain or ``file://``)."""

    def errors(self, uri: str, op: str, *, read: bool = False) -> contextlib.AbstractContextManager[None]:
        """OS failures as StorageError."""
        return os_errors(uri, op, read=read)

    def read_bytes(self, uri: str) -> bytes:
        """The whole file."""
        return local_path(uri).read_bytes()

    def exists(self, uri: str) -> bool:
        """Whether a file exists at ``uri``."""
        return local_path(uri).is_file()

    def size(self, uri: str) -> int:
        """The file's size in bytes."""
        return local_path(uri).stat().st_size

    def delete(self, uri: str) -> None:
        """Delete the file; a missing one is fine."""
        with contextlib.suppress(FileNotFoundError):
            local_path(uri).unlink()

    def open_read(self, uri: str, chunk_size: int) -> IO[bytes]:
        """The file, opened for binary reads."""
        return local_path(uri).open("rb")

    def list_uris(self, prefix: str) -> list[str]:
        """Every file under the directory, recursive and sorted, in the prefix's style."""
        root = local_path(prefix)
        style = FILE_SCHEME if prefix.startswith(FILE_SCHEME) else ""
        if not root.is_dir():
            return []
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if not is_helper_file(name):
                    out.append(style + os.path.join(dirpath, name))
        return sorted(out)

    def list_versions(self, prefix: str) -> dict[str, str]:
        """Every file under the directory with a version from its inode, size and mtime: a file replaced by
        rename (how every writer here publishes) or rewritten gets a new one."""
        versions = {}
        for uri in self.list_uris(prefix):
            with contextlib.suppress(FileNotFoundError):  # gone between the walk and the stat
                versions[uri] = self.version(uri)
        return versions

    def version(self, uri: str) -> str:
        """inode, size and mtime of the file."""
        st = local_path(uri).stat()
        return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"

    def remove_stale_temp_files(self, prefix: str, *, older_than_s: float) -> int:
        """Temp files older than ``older_than_s`` under ``prefix`` (a live writer's are younger)."""
        root = local_path(prefix)
        if not root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for path in root.rglob(".*"):
            if path.is_file() and TMP_RE.match(path.name) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def write(self, uri: str, data: bytes, sha: str, *, overwrite: bool, content_type: str | None,
              kms_key_name: str | None) -> None:
        """Temp file, fsync, link (create-only) or replace."""
        with os_errors(uri, "write"):
            _write_with(uri, _writer(data), sha, overwrite)

    def upload_file(self, src: Path, uri: str, *, overwrite: bool, content_type: str | None,
                    kms_key_name: str | None) -> None:
        """A streamed copy with the create-only contract."""
        def copy(f: IO[bytes]) -> None:
            with src.open("rb") as s:
                shutil.copyfileobj(s, f, READ_CHUNK)

        with os_errors(uri, "upload"):
            _write_with(uri, copy, sha256_file(src), overwrite)

    def download_into(self, uri: str, f: IO[bytes]) -> str | None:
        """Copy the file; a local file carries no stored checksum."""
        with local_path(uri).open("rb") as s:
            shutil.copyfileobj(s, f, READ_CHUNK)
        return None

    def digest(self, uri: str) -> tuple[int, str]:
        """(bytes, sha256), streamed."""
        path = local_path(uri)
        return path.stat().st_size, sha256_file(path)

    def remove_empty_dirs(self, prefix: str) -> None:
        """Bottom-up, so a directory emptied by its children's removal goes too."""
        root = local_path(prefix)
        if not root.is_dir():
            return
        for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()

    def compare_and_swap_json(self, uri: str, update: Callable[[Any | None], Any], *, max_attempts: int,
                              kms_key_name: str | None) -> Any:
        """Read, update and replace under an exclusive lock on a sidecar file."""
        final = local_path(uri)
        with os_errors(uri, "compare-and-swap"), _flock(final.with_name(f".{final.name}{LOCK_SUFFIX}"), uri):
            current = json.loads(final.read_bytes()) if final.is_file() else None
            new = update(current)
            if final.is_file() and new == current:
                return new
            data = dumps_json(new).encode("utf-8")
            _write_with(uri, _writer(data), hashlib.sha256(data).hexdigest(), True)
            return new
