"""Raw input for ``python -m beam_jobs.preprocess --input URI_OR_GLOB``: the job reads and validates itself.

The DAG's preprocess reads ``validation/accepted.jsonl``, written by the Great Expectations
``validate_input`` stage. With ``--input`` the job instead reads JSONL, CSV or Parquet files
(local paths or ``gs://``, glob patterns, gzip/bzip2/zstd by extension) through Beam's
``FileSystems`` and applies the same row rules itself, so it can run standalone on any runner.

How it stays deterministic and flat in memory:

1. *Match* at construction: the pattern expands to files sorted by path; a file's rank is its
   place in that order, so the global row index (rank order, then row order inside the file) does
   not depend on the runner.
2. *Ingest* (one file per element, streamed): rows are read with the parsers of
   :mod:`genbatch.io.input_rows` (broken JSON, ragged CSV, bad UTF-8... become ``parse_error`` rows,
   never a crash) and judged in batches of :data:`VALIDATE_ROWS` by
   :func:`genbatch.quality.expectations.validate_rows` (the GX suite of the ``validate_input`` stage: the
   same rules, the same reasons). Each row becomes one line of a per-file temp object,
   ``{"local": i, "row": ...}`` or ``{"local": i, "reject": ...}``; the step emits only a small
   summary per file (rows, rejects by rule).
3. *Index*: the summaries give each file its offset; the temp objects are read back (by
   ``ReadAllFromText``) and every line becomes ``{"index": offset + i, "row": ...}`` (what
   ``validation/accepted.jsonl`` holds) or a reject record with its global ``row_index``.

Whole-file problems raise :class:`~genbatch.errors.ShardInputError` naming the file, as the
``validate_input`` stage does: a file whose format cannot be told, an unreadable CSV header, a
UTF-16 file, a file that is not Parquet.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import PurePosixPath
from typing import IO, Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs.records import index_sort_key, keyed_line
from genbatch.errors import ShardInputError
from genbatch.io import input_files, storage
from genbatch.io.input_rows import (
    _BOM,
    RawRow,
    _parquet_fixers,
    _parquet_rows,
    _parse_jsonl_line,
    check_not_utf16,
    detect_format,
    iter_csv_lines,
)
from genbatch.quality.expectations import InputSchemaError, ValidationOutcome, validate_rows
from genbatch.run.row_shape import RowShape

INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet")
VALIDATE_ROWS = 4096
"""Rows judged per GX validation call (about 0.25 s a call, nearly independent of the size)."""

RAW_CHARS = 64 * 1024
"""Characters of a malformed line kept in its reject (as its ``row``); longer ones are cut with a marker."""



@dataclass(frozen=True)
class InputFile:
    """One matched input file: its rank in path order, its path and its canonical format."""

    rank: int
    path: str
    fmt: str


@dataclass(frozen=True)
class RowRules:
    """The row-rule settings of the run spec (``input`` section) that validation takes."""

    max_prompt_chars: int
    shape: RowShape = RowShape()  # template, OpenAI Batch lines, chat (genbatch.run.row_shape)


def match_input(pattern: str, fmt: str = "auto") -> list[InputFile]:
    """Expand a path, ``gs://`` URI or glob to its files, sorted by path; refuse an empty match."""
    if fmt not in INPUT_FORMATS:
        raise ShardInputError(f"unknown --input_format {fmt!r}: use one of {', '.join(INPUT_FORMATS)}")
    paths = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not paths:
        raise ShardInputError(f"--input {pattern!r} matches no file; check the path or glob")
    return [InputFile(rank, path, file_format(path, fmt)) for rank, path in enumerate(paths)]


def pinned_input(files: list[input_files.InputFile]) -> list[InputFile]:
    """The run's pinned files (``validation/input_files.json``, already sorted) as the job's ranked files."""
    return [InputFile(rank, f.uri, f.format) for rank, f in enumerate(files)]


def file_format(path: str, fmt: str = "auto") -> str:
    """The format of ``path``: as given, or from its extension under any compression suffix."""
    name = PurePosixPath(path).name
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        name = name.rsplit(".", 1)[0]
    return detect_format(name if fmt == "auto" else path, None if fmt == "auto" else fmt)


def ingest_uri(tmp_dir: str, rank: int) -> str:
    return storage.join(tmp_dir, "ingest", f"file-{rank:06d}.jsonl")


# --- reading one file as RawRows (the parsers of genbatch.io.input_rows, over a stream) ----------


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """Physical lines with their line ends, the UTF-8 BOM dropped from the first."""
    first = True
    for line in iter(stream.readline, b""):
        if first:
            line = line[len(_BOM):] if line.startswith(_BOM) else line
            first = False
        yield line


def _raw_text(text: str) -> str:
    return text if len(text) <= RAW_CHARS else text[:RAW_CHARS] + f"...[{len(text) - RAW_CHARS} more characters]"


def read_jsonl(stream: IO[bytes], path: str) -> Iterator[tuple[RawRow, str | None]]:
    """Rows with, for a malformed line, the line itself (invalid bytes as ``\\xNN`` escapes)."""
    index = 0
    for number, line in enumerate(_lines(stream), start=1):
        if number == 1:
            check_not_utf16(line, path)
        raw = line.rstrip(b"\n").removesuffix(b"\r")
        if not raw.strip():
            continue
        row, error = _parse_jsonl_line(raw)
        text = _raw_text(raw.decode("utf-8", errors="backslashreplace")) if error is not None else None
        yield RawRow(index=index, row=row, parse_error=error, line=number), text
        index += 1


def read_csv(stream: IO[bytes], path: str) -> Iterator[tuple[RawRow, str | None]]:
    """Rows with, for a malformed row, its physical lines as read."""
    lines = _lines(stream)
    first = next(lines, b"")
    check_not_utf16(first, path)
    consumed: list[tuple[int, bytes]] = []  # (line number, line) read since the last row

    def text() -> Iterator[str]:  # surrogateescape: each row with bad bytes is flagged on its own
        for number, line in enumerate(_chain(first, lines), start=1):
            consumed.append((number, line))
            yield line.decode("utf-8", errors="surrogateescape")

    for row in iter_csv_lines(text(), path):
        raw = None
        if row.parse_error is not None:  # the row's own lines: from the line it starts on
            own = b"".join(line for number, line in consumed if number >= (row.line or 0))
            raw = _raw_text(own.decode("utf-8", errors="backslashreplace"))
        consumed.clear()
        yield row, raw


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def read_parquet(stream: IO[bytes], path: str) -> Iterator[tuple[RawRow, str | None]]:
    """Rows (a Parquet row that cannot be converted has no raw text to keep)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardInputError(f"cannot read {path} as Parquet: {str(exc).rstrip('.')}; check that the file is "
                              "Parquet (not JSONL or CSV with a .parquet name) and was fully written") from exc
    return ((row, None) for row in _parquet_rows(parquet, _parquet_fixers(parquet.schema_arrow), path))


READERS = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}


def open_input(path: str, fmt: str) -> IO[bytes]:
    """Beam's FileSystems: local or gs://; compression from the extension (Parquet is read seekable).

    gzip is decompressed by Python's ``gzip`` over the raw stream, not by Beam's reader: Beam's stops
    quietly at the end of a truncated file, and the rows after the cut would vanish from every count;
    ``gzip`` raises ``EOFError`` there, which :func:`iter_file_rows` turns into a whole-file error."""
    if fmt != "parquet" and CompressionTypes.detect_compression_type(path) == CompressionTypes.GZIP:
        raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    compression = CompressionTypes.UNCOMPRESSED if fmt == "parquet" else CompressionTypes.AUTO
    stream: IO[bytes] = FileSystems.open(path, compression_type=compression)
    return stream


def iter_file_rows(file: InputFile) -> Iterator[tuple[RawRow, str | None]]:
    """The file's rows; a parse error names the file and line (as ``validate_input``'s do)."""
    try:
        with open_input(file.path, file.fmt) as stream:
            for row, text in READERS[file.fmt](stream, file.path):
                if row.parse_error is not None:
                    where = f"line {row.line}" if row.line is not None else f"row {row.index}"
                    row = replace(row, parse_error=f"{file.path} {where}: {row.parse_error}")
                yield replace(row, source=file.path), text  # a reject names its file and line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:  # validate_input's words
        raise input_files.bad_gzip(file.path, exc) from exc


# --- judging rows: the validate_input stage's GX suite, a batch at a time -----------------------


def judge(batch: list[RawRow], rules: RowRules, source: str) -> ValidationOutcome:
    """Row verdicts for one batch. Table-level checks (row bounds, reject fraction) are the whole
    input's business (checked at commit); a batch that trips one still carries every row's verdict."""
    try:
        return validate_rows(batch, max_prompt_chars=rules.max_prompt_chars, max_reject_fraction=1.0, source=source,
                             shape=rules.shape)
    except InputSchemaError as exc:
        if exc.outcome is None:
            raise
        return exc.outcome


def _batches(rows: Iterable[tuple[RawRow, str | None]], size: int) -> Iterator[list[tuple[RawRow, str | None]]]:
    batch: list[tuple[RawRow, str | None]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def judged_lines(rows: Iterable[tuple[RawRow, str | None]], rules: RowRules, source: str,
                 batch_rows: int = VALIDATE_ROWS) -> Iterator[tuple[dict[str, Any], str | None]]:
    """``({"local": i, "row"|"reject": ...}, rule or None)`` for every row, in row order.

    A reject is validation's record (``{id, reason, rule, row, row_index}``, ``row_index`` local to
    the file until :class:`ToAccepted` makes it global), with ``row`` the line(s) as read when the row
    could not be parsed at all.
    """
    for batch in _batches(rows, batch_rows):
        outcome = judge([raw for raw, _ in batch], rules, source)
        verdicts: dict[int, dict[str, Any]] = {
            i: {"local": i, "row": row, **({"source": outcome.sources[i]} if i in outcome.sources else {})}
            for i, row in outcome.accepted}
        rules_of: dict[int, str] = {}
        for reject in outcome.rejects:
            verdicts[reject.index] = {"local": reject.index, "reject": reject.to_json()}
            rules_of[reject.index] = reject.rule
        for raw, text in batch:
            verdict = verdicts[raw.index]
            if text is not None and "reject" in verdict:
                verdict["reject"]["row"] = text  # the row as read: its line(s), when it could not be parsed
            yield verdict, rules_of.get(raw.index)


class IngestFile(beam.DoFn):
    """One input file in, one temp object of judged lines written, one small summary out."""

    def __init__(self, tmp_dir: str, rules: RowRules, batch_rows: int | None = None) -> None:
        self.tmp_dir = tmp_dir
        self.rules = rules
        self.batch_rows = batch_rows

    def process(self, file: InputFile) -> Iterator[dict[str, Any]]:
        uri = ingest_uri(self.tmp_dir, file.rank)
        by_rule: Counter[str] = Counter()
        rows = 0
        fd, local = tempfile.mkstemp(prefix="genbatch-ingest-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                for line, rule in judged_lines(iter_file_rows(file), self.rules, file.path,
                                                   self.batch_rows or VALIDATE_ROWS):
                    out.write(json.dumps(line, sort_keys=True, ensure_ascii=False) + "\n")
                    rows += 1
                    if rule is not None:
                        by_rule[rule] += 1
            storage.upload_file(local, uri)  # create-only: a retried bundle writes the same bytes
        finally:
            os.unlink(local)
        yield {"rank": file.rank, "path": file.path, "format": file.fmt, "uri": uri, "rows": rows,
               "rejected": sum(by_rule.values()), "rejects_by_rule": dict(sorted(by_rule.items()))}


class ToAccepted(beam.DoFn):
    """``(temp object, judged line)`` → ``{"index", "row"}``, or a keyed reject line (``emit_rejects``)."""

    REJECTS = "rejects"

    def __init__(self, emit_rejects: bool) -> None:
        self.emit_rejects = emit_rejects
        self._offsets: dict[str, int] | None = None

    def process(self, element: tuple[str, str], summaries: list[dict[str, Any]]) -> Iterator[Any]:
        if self._offsets is None:
            self._offsets = file_offsets(summaries)
        uri, text = element
        line = json.loads(text)
        index = self._offsets[uri] + int(line["local"])
        if "row" in line:
            yield {"index": index, "row": line["row"], **({"source": line["source"]} if "source" in line else {})}
        elif self.emit_rejects:
            record = {**line["reject"], "row_index": index}
            yield beam.pvalue.TaggedOutput(self.REJECTS, (self.REJECTS, keyed_line(index_sort_key(index), record)))


def file_offsets(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """Temp object URI → global row index of its first row (files in rank order)."""
    offsets, at = {}, 0
    for summary in sorted(summaries, key=lambda s: int(s["rank"])):
        offsets[summary["uri"]] = at
        at += int(summary["rows"])
    return offsets


def input_report(pattern: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over every file: rows, rule rejects by rule, and each file's figures."""
    files = sorted(summaries, key=lambda s: int(s["rank"]))
    by_rule: Counter[str] = Counter()
    for s in files:
        by_rule.update(s["rejects_by_rule"])
    rows = sum(int(s["rows"]) for s in files)
    rejected = sum(by_rule.values())
    return {
        "input": pattern,
        "rows": {"input": rows, "accepted": rows - rejected, "rejected": rejected},
        "rejects_by_rule": dict(sorted(by_rule.items())),
        "files": [{**{k: s[k] for k in ("path", "format", "rows", "rejected")}, "first_row_index": first}
                  for s, first in zip(files, _firsts(files), strict=True)],
    }


def _firsts(files: list[dict[str, Any]]) -> list[int]:
    """The global row index of each file's first row (files in rank order)."""
    out, at = [], 0
    for summary in files:
        out.append(at)
        at += int(summary["rows"])
    return out
