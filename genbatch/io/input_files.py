"""Which files an ``input.uri`` names (one file, a glob or a prefix), in a fixed order, within limits.

A team's input is often hundreds of export files under a bucket prefix. Prepare lists them once, before
any row is read, and pins the list in the run, so every stage reads the same files in the same order:
files sorted by URI, rows numbered across them (``row_index``), whatever runner reads them. A glob's
``*``/``?`` stay in one folder, ``**`` crosses folders; a trailing ``/`` means every file under it; names
starting with ``_``/``.`` (``_SUCCESS``) are skipped unless the glob spells them. Sizes are stored sizes,
checked against the limits before any file is opened; errors name the file and the setting to raise.

Matching, limits and compression in detail: docs/internals.md#genbatchioinput_files
"""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import PurePosixPath
from typing import IO, Any

from genbatch.errors import PathNotAllowedError, ShardInputError, SpecError
from genbatch.io import storage
from genbatch.io.backend import READ_CHUNK
from genbatch.io.input_rows import RawRow, _parquet_fixers, _parquet_rows, detect_format, iter_input_rows
from genbatch.io.uris import is_gcs, local_path, split_gcs

__all__ = [
    "GZIP_SUFFIX",
    "InputFile",
    "InputLimits",
    "file_format",
    "glob_regex",
    "is_many",
    "list_input_files",
    "open_input",
    "iter_rows_of_files",
    "read_input",
    "sample_rows",
]

GZIP_SUFFIX = ".gz"
_WILDCARDS = "*?["


@dataclass(frozen=True)
class InputLimits:
    """How many files and bytes an input may have (the spec's ``input`` section, capped by the deployment)."""

    max_files: int
    max_file_bytes: int
    max_total_bytes: int
    ceiling_bytes: int | None = None
    """The deployment's ceiling (``GENBATCH_MAX_INPUT_BYTES``) on the total and on each file; users cannot raise it."""


@dataclass(frozen=True)
class InputFile:
    """One input file: its URI, stored size, canonical format, compression and storage version."""

    uri: str
    bytes: int
    format: str
    compression: str | None = None  # "gzip" or None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (what ``validation/input_files.json`` holds per file)."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> InputFile:
        """The inverse of :meth:`to_json`."""
        return cls(uri=str(value["uri"]), bytes=int(value["bytes"]), format=str(value["format"]),
                   compression=value.get("compression"), version=value.get("version"))


def is_many(uri: str) -> bool:
    """True when ``uri`` names many files: a glob or a prefix ending in ``/``."""
    return uri.endswith("/") or any(c in uri for c in _WILDCARDS)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob relative to its base: ``*``/``?`` never cross ``/``, ``**`` does, ``[...]`` is a class."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more folders
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise SpecError(f"input.uri glob {pattern!r} has a '[' without its ']'; close the class or "
                                "remove the bracket")
            body = pattern[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body.replace("\\", "\\\\")
            out.append(f"(?!/)[{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def file_format(uri: str, fmt: str | None = None) -> tuple[str, str | None]:
    """(canonical format, compression) of one file: ``fmt`` when given, else from the name under ``.gz``."""
    name = PurePosixPath(uri).name
    compression = "gzip" if name.lower().endswith(GZIP_SUFFIX) else None
    inner = name[: -len(GZIP_SUFFIX)] if compression else name
    try:
        canonical = detect_format(inner if fmt is None else uri, fmt)
    except ShardInputError as exc:
        raise ShardInputError(f"input file {uri}: {exc} (input.format applies to every file)") from exc
    if canonical == "parquet" and compression:
        raise ShardInputError(f"input file {uri} is gzipped Parquet: Parquet compresses inside the file, so store it "
                              "as plain .parquet (written with compression='snappy' or 'zstd')")
    return canonical, compression


def _split_pattern(uri: str) -> tuple[str, str]:
    """(the fixed folder before the first wildcard, the rest) of a glob; (prefix, "") of a prefix."""
    if uri.endswith("/") and not any(c in uri for c in _WILDCARDS):
        return uri, ""
    first = min(uri.find(c) for c in _WILDCARDS if c in uri)
    cut = uri.rfind("/", 0, first)
    if cut < 0:
        return "", uri
    if is_gcs(uri) and cut < len("gs://") + len(split_gcs(uri)[0]):
        raise SpecError(f"input.uri {uri!r} has a wildcard in the bucket name; name the bucket exactly")
    return uri[: cut + 1], uri[cut + 1:]


def _relative(base: str, uri: str) -> str:
    if is_gcs(uri):
        return uri[len(base):] if base.endswith("/") else uri[len(base):].lstrip("/")
    root = local_path(base or ".")
    path = local_path(uri)
    return path.relative_to(root).as_posix() if root.parts else path.as_posix()


def _skipped(relative: str) -> bool:
    """Writers' bookkeeping under a prefix: a name or folder starting with ``_`` or ``.``."""
    return any(part.startswith(("_", ".")) for part in relative.split("/"))


def _listing(base: str) -> dict[str, str]:
    """URI → version of every object under ``base`` (a local folder or a gs:// prefix)."""
    if not is_gcs(base) and not local_path(base or ".").is_dir():
        return {}
    return storage.list_versions(base or ".")


def _matches(uri: str, allowed: Sequence[str]) -> list[tuple[str, str | None]]:
    """(uri, version) of every file ``uri`` names, sorted; confined to ``allowed`` when given."""
    if not is_many(uri):
        if allowed:
            storage.confine(uri, allowed)
        return [(uri, storage.version(uri))] if storage.exists(uri) else []
    base, rest = _split_pattern(uri)
    if allowed:
        storage.confine(base or ".", allowed)
    regex = glob_regex(rest) if rest else None
    # Bookkeeping names are skipped under a prefix and under wildcards, unless the glob spells them out.
    spelled = any(seg.startswith(("_", ".")) for seg in rest.split("/"))
    found = []
    for match, version in _listing(base).items():
        relative = _relative(base, match)
        if not spelled and _skipped(relative):
            continue
        if regex is not None and not regex.match(relative):
            continue
        if allowed:  # a symlink under the folder may still point outside it
            try:
                storage.confine(match, allowed)
            except PathNotAllowedError as exc:
                raise PathNotAllowedError(f"input file {match} matched by {uri!r}: {exc}") from exc
        found.append((match, version))
    return sorted(found)


def list_input_files(uri: str, fmt: str | None, limits: InputLimits, *,
                     allowed: Sequence[str] = ()) -> list[InputFile]:
    """The files ``uri`` names, sorted by URI, with sizes and formats; errors name the file and the setting.

    ``fmt`` None means each file's format comes from its extension. ``allowed`` confines the glob's base
    and every match (``GENBATCH_ALLOWED_PREFIXES``). Raises ShardInputError for no match or an unreadable
    format, SpecError for a limit exceeded.
    """
    matches = _matches(uri, allowed)
    if not matches:
        what = "matches no file" if is_many(uri) else "does not exist"
        raise ShardInputError(f"input {uri!r} {what}; check input.uri in the spec (a glob like gs://b/new/*.jsonl, "
                              "a prefix ending in /, or one file)")
    if len(matches) > limits.max_files:
        raise SpecError(f"input {uri!r} matches {len(matches)} files, over input.max_files={limits.max_files} "
                        f"(first: {matches[0][0]}, last: {matches[-1][0]}); narrow the glob or raise input.max_files")
    per_file = min(limits.max_file_bytes, limits.ceiling_bytes or limits.max_file_bytes)
    total_limit = min(limits.max_total_bytes, limits.ceiling_bytes or limits.max_total_bytes)
    ceiling = f", GENBATCH_MAX_INPUT_BYTES={limits.ceiling_bytes or 'unset'}"
    files: list[InputFile] = []
    total = 0
    for match, version in matches:
        size = storage.size(match)
        if size > per_file:
            raise SpecError(f"input file {match!r} is {size} bytes, over the limit of {per_file} bytes "
                            f"(input.max_file_bytes={limits.max_file_bytes}{ceiling}); split the file or raise "
                            "input.max_file_bytes")
        total += size
        canonical, compression = file_format(match, fmt)
        files.append(InputFile(match, size, canonical, compression, version))
    if total > total_limit:
        raise SpecError(f"input {uri!r} ({len(files)} files) is {total} bytes, over the limit of {total_limit} bytes "
                        f"(input.max_total_bytes={limits.max_total_bytes}{ceiling}); split the input into several "
                        "runs or raise input.max_total_bytes")
    return files


def open_input(file: InputFile) -> IO[bytes]:
    """A binary stream of the file's (decompressed) bytes, local or gs://, read in chunks."""
    backend = storage.backend_for(file.uri)
    with backend.errors(file.uri, "read", read=True):
        stream = backend.open_read(file.uri, READ_CHUNK)
    if file.compression == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[return-value]
    return stream


def bad_gzip(uri: str, exc: BaseException) -> ShardInputError:
    """The one message for a gzip input that cannot be decompressed (cut short, corrupt), wherever it is read."""
    return ShardInputError(f"input file {uri} is not valid gzip ({exc}); re-compress it or drop the .gz suffix if "
                           "it is plain text")


def read_input(file: InputFile) -> bytes:
    """The whole decompressed file (bounded by ``input.max_file_bytes`` before decompression)."""
    with open_input(file) as stream:
        try:
            return stream.read()
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise bad_gzip(file.uri, exc) from exc


def iter_rows_of_files(files: Sequence[InputFile], counts: list[int] | None = None) -> Iterator[RawRow]:
    """The rows of every file in order, numbered across files (``index``: the run's ``row_index``); one
    file's bytes in memory at a time. A parse error names its file and line; ``counts`` gets each file's
    row count as the file is finished. Whole-file problems raise ShardInputError naming the file."""
    offset = 0
    for file in files:
        count = 0
        for row in iter_input_rows(read_input(file), file.format, source=file.uri):
            error = row.parse_error
            if error is not None:
                where = f"line {row.line}" if row.line is not None else f"row {row.index}"
                error = f"{file.uri} {where}: {error}"
            yield replace(row, index=offset + row.index, parse_error=error, source=file.uri)
            count += 1
        offset += count
        if counts is not None:
            counts.append(count)


def _head_rows(file: InputFile, max_rows: int, max_bytes: int) -> list[RawRow]:
    """At most ``max_rows`` rows from the start of one file, reading at most ``max_bytes`` of it; a text file
    cut short loses its last, possibly partial, row."""
    if file.format == "parquet":
        import pyarrow.parquet as pq

        with open_input(file) as stream:
            parquet = pq.ParquetFile(stream)
            return list(itertools.islice(_parquet_rows(parquet, _parquet_fixers(parquet.schema_arrow), file.uri),
                                         max_rows))
    with open_input(file) as stream:
        try:
            data = stream.read(max_bytes + 1)
        except (OSError, EOFError) as exc:
            raise bad_gzip(file.uri, exc) from exc
    cut = len(data) > max_bytes
    if cut:
        data = data[: data.rfind(b"\n", 0, max_bytes) + 1]
    rows = list(iter_input_rows(data, file.format, source=file.uri))
    return rows[: max_rows if not cut else max(0, min(max_rows, len(rows) - 1))]


def sample_rows(files: Sequence[InputFile], max_rows: int, max_bytes: int) -> list[RawRow]:
    """The first ``max_rows`` rows of the input (from the first files on), reading at most ``max_bytes`` of each
    file: what the Airflow-side checks see when the row rules run in the pipeline. Indices are the rows' own
    ``row_index`` up to the first file cut short, then positions in the sample."""
    out: list[RawRow] = []
    for file in files:
        if len(out) >= max_rows:
            break
        for row in _head_rows(file, max_rows - len(out), max_bytes):
            out.append(replace(row, index=len(out)))
    return out
