"""Read the rows of a run's input (JSONL, CSV or Parquet) without ever failing on one bad row.

A broken row becomes a :class:`RawRow` with ``parse_error`` set, so validation can reject it with a
rule and the counts still reconcile (``input = accepted + rejected``). Only a file that cannot be
read at all (unknown format, not Parquet, UTF-16) raises :class:`~genbatch.errors.ShardInputError`.

Format decisions (blank rows, row numbering, encodings, CSV and Parquet values): docs/internals.md#genbatchioinput_rows
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genbatch.errors import ShardInputError

__all__ = [
    "FORMATS",
    "MAX_ROW_BYTES",
    "RawRow",
    "detect_format",
    "find_unencodable",
    "iter_csv_lines",
    "iter_input_rows",
    "read_input_file",
]

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
"""The input formats genbatch reads."""

MAX_ROW_BYTES = 64 * 1024 * 1024
"""A row longer than this is a parse error without being parsed (guards memory, not quality)."""

_FORMAT_ALIASES: dict[str, str] = {
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
}
_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")
# A JSON escape that can decode to a lone surrogate; cheap pre-filter before walking the object.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SIGNED_INT = re.compile(r"[+-]?[0-9]+")
_SNIPPET = 60
_MAX_SEED_DIGITS = 100  # far above 2**63; keeps int() clear of Python's 4300-digit limit


@dataclass(frozen=True)
class RawRow:
    """One input row as read, before validation: exactly one of ``row``/``parse_error`` is set."""

    index: int
    row: dict[str, Any] | None
    parse_error: str | None = None
    line: int | None = None  # 1-based line in its file (JSONL, CSV: blank lines counted), None for Parquet
    source: str | None = None  # the file it came from (set by genbatch.io.input_files)
    shape_problem: tuple[str, str] | None = None  # (rule, reason) when it could not be shaped (genbatch.run.row_shape)

    def provenance(self) -> dict[str, Any] | None:
        """``{"file", "line"}`` for a reject record: where to look in the user's own file."""
        if self.source is None:
            return None
        return {"file": self.source, **({"line": self.line} if self.line is not None else {})}


def detect_format(name: str, fmt: str | None = None) -> str:
    """Return the canonical format for ``fmt``, or guess it from the extension of ``name``."""
    if fmt is not None:
        canonical = _FORMAT_ALIASES.get(fmt.strip().lower().lstrip("."))
        if canonical is None:
            raise ShardInputError(
                f"unknown input format {fmt!r} for {name}: use one of {', '.join(FORMATS)}"
            )
        return canonical
    suffix = Path(name).suffix.lower().lstrip(".")
    canonical = _FORMAT_ALIASES.get(suffix)
    if canonical is None:
        shown = f".{suffix}" if suffix else "(none)"
        raise ShardInputError(
            f"cannot tell the format of {name} from its extension {shown}: "
            f"rename it to .jsonl, .csv or .parquet, or pass the format ({', '.join(FORMATS)})"
        )
    return canonical


def read_input_file(path: str | Path, fmt: str | None = None) -> Iterator[RawRow]:
    """Read a local input file; the format comes from ``fmt`` or the file extension."""
    text_path = str(path)
    if "://" in text_path:
        raise ShardInputError(
            f"read_input_file takes a local path, got {text_path!r}: fetch remote objects with the "
            "storage layer and pass the bytes to iter_input_rows(data, fmt)"
        )
    canonical = detect_format(text_path, fmt)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ShardInputError(
            f"cannot read input file {text_path}: {exc.strerror or exc}; "
            "check the path and permissions"
        ) from exc
    return iter_input_rows(data, canonical, source=text_path)


def check_not_utf16(head: bytes, source: str) -> None:
    """Refuse a text file that starts with a UTF-16/32 byte-order mark (its rows would all be garbage)."""
    if head.startswith(_UTF16_32_BOMS):
        raise ShardInputError(
            f"input {source} is UTF-16 or UTF-32 encoded (byte-order mark {head[:4]!r}): "
            "re-save it as UTF-8 and rerun"
        )


def iter_input_rows(data: bytes, fmt: str, *, source: str = "<input>") -> Iterator[RawRow]:
    """Yield the rows of ``data`` in ``fmt``; whole-file problems raise here, before iteration."""
    canonical = detect_format(source, fmt)
    if canonical != "parquet":
        check_not_utf16(data, source)
    if canonical == "jsonl":
        return _iter_jsonl(data)
    if canonical == "csv":
        return _iter_csv(data, source)
    return _iter_parquet(data, source)


def find_unencodable(value: Any, path: str = "row") -> str | None:
    """Say where ``value`` holds a string UTF-8 cannot encode (a lone surrogate), else None."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            return f"{path} has an unpaired surrogate U+{code:04X} at position {exc.start}"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = find_unencodable(key, f"{path} key") or find_unencodable(item, f"{path}.{key}")
            if where is not None:
                return where
        return None
    if isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            where = find_unencodable(item, f"{path}[{position}]")
            if where is not None:
                return where
    return None


def _snippet(text: str) -> str:
    """A short, escaped excerpt of a line for error messages (never the whole 10 MB line)."""
    short = text[:_SNIPPET]
    return repr(short) + ("..." if len(text) > _SNIPPET else "")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without LF/CRLF); no second copy of the whole file."""
    start = 0
    number = 0
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        number += 1
        line = data[start:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        yield number, line
        start = end + 1


def json_error_at(exc: json.JSONDecodeError) -> str:
    """The decoder's message and where: ``Expecting ',' delimiter at column 7``, ``Unterminated string
    starting at column 23`` (its message already ends in "at")."""
    return f"{exc.msg} {'column' if exc.msg.endswith(' at') else 'at column'} {exc.colno}"


def _parse_jsonl_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one JSONL line into (row, None) or (None, why it is not a row)."""
    if len(raw) > MAX_ROW_BYTES:
        return None, (
            f"line is {len(raw)} bytes, over the {MAX_ROW_BYTES // (1024 * 1024)} MiB row limit; "
            "split or shorten it"
        )
    nul = raw.find(b"\x00")
    if nul >= 0:
        return None, (
            f"line contains a raw NUL byte at byte {nul} (binary data or a UTF-16 file?); "
            "save the input as UTF-8 JSON Lines"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (
            f"invalid UTF-8 at byte {exc.start} ({raw[exc.start:exc.start + 4]!r}); "
            "save the input as UTF-8"
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"broken JSON: {json_error_at(exc)}: {_snippet(text)}"
    except RecursionError:
        return None, "broken JSON: nested too deeply; flatten the row"
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        return None, f"broken JSON: {exc}: {_snippet(text)}"
    if not isinstance(value, dict):
        return None, (
            f"line is {_json_kind(value)}, not a JSON object; each line must be one object like "
            '{"id": "...", "prompt": "..."}'
        )
    if _SURROGATE_ESCAPE.search(text):
        where = find_unencodable(value)
        if where is not None:
            return None, f"{where} (from a \\uD800-\\uDFFF escape); it cannot be written as UTF-8"
    return value, None


def _iter_jsonl(data: bytes) -> Iterator[RawRow]:
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    index = 0
    for number, raw in _split_lines(data):
        if not raw.strip():
            continue
        row, error = _parse_jsonl_line(raw)
        yield RawRow(index=index, row=row, parse_error=error, line=number)
        index += 1


def _csv_value(key: str, cell: str) -> Any:
    """Convert the CSV cells the contract types need: integer seeds and JSON-object params."""
    if key == "seed" and _SIGNED_INT.fullmatch(cell.strip()) and len(cell) <= _MAX_SEED_DIGITS:
        return int(cell.strip())
    if key == "params" and cell.lstrip().startswith("{"):
        try:
            parsed = json.loads(cell)
        except (ValueError, RecursionError):
            return cell
        return parsed if isinstance(parsed, dict) else cell
    return cell


def _iter_csv(data: bytes, source: str) -> Iterator[RawRow]:
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    # surrogateescape keeps going past bad bytes; each affected row is then flagged on its own.
    text = data.decode("utf-8", errors="surrogateescape")
    return iter_csv_lines(io.StringIO(text, newline=""), source)


def iter_csv_lines(lines: Iterable[str], source: str) -> Iterator[RawRow]:
    """The rows of CSV text given line by line (line ends kept, BOM dropped, bad bytes decoded with
    ``surrogateescape``); shared by whole-file reads and the Beam job's streamed reads."""
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    index = 0
    while True:
        start_line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if header is None:
                raise ShardInputError(
                    f"cannot read the CSV header of {source}: {exc}; fix the first line "
                    "(comma-separated column names)"
                ) from exc
            yield RawRow(index=index, row=None, parse_error=f"broken CSV: {exc}", line=start_line)
            index += 1
            continue
        if not any(cell.strip() for cell in cells):
            continue
        if header is None:
            header = _csv_header(cells, source)
            continue
        yield _csv_row(cells, header, index, start_line)
        index += 1


def _csv_header(cells: list[str], source: str) -> list[str]:
    header = [cell.strip() for cell in cells]
    bad = find_unencodable(header, "header")
    if bad is not None or any("\x00" in name for name in header):
        raise ShardInputError(
            f"the CSV header of {source} is not valid UTF-8 text: save the file as UTF-8"
        )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise ShardInputError(
                f"the CSV header of {source} repeats the column {name!r}: rename one of them"
            )
        seen.add(name)
    return header


def _csv_row(cells: list[str], header: list[str], index: int, line: int) -> RawRow:
    def broken(why: str) -> RawRow:
        return RawRow(index=index, row=None, parse_error=why, line=line)

    if len(cells) != len(header):
        return broken(
            f"row has {len(cells)} fields but the header has {len(header)}; quote cells that "
            "contain commas or newlines"
        )
    joined = "".join(cells)
    if "\x00" in joined:
        return broken("row contains a raw NUL byte (binary data or a UTF-16 file?); save as UTF-8")
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = joined[exc.start].encode("utf-8", errors="surrogateescape")
            return broken(f"invalid UTF-8 (byte {byte!r}); save the input as UTF-8")
    row = {
        key: _csv_value(key, cell)
        for key, cell in zip(header, cells, strict=True)
        if cell != ""
    }
    return RawRow(index=index, row=row, parse_error=None, line=line)


def _iter_parquet(data: bytes, source: str) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardInputError(
            f"cannot read {source} as Parquet: {str(exc).rstrip('.')}; check that the file is "
            "Parquet (not JSONL or CSV with a .parquet name) and was fully written"
        ) from exc
    fixers = _parquet_fixers(parquet.schema_arrow)
    return _parquet_rows(parquet, fixers, source)


class _NotText(ValueError):
    """A binary Parquet value that is not UTF-8 text."""


def _plain(value: Any) -> Any:
    """Turn a Parquet value into what JSON can carry, since every later stage writes JSONL.

    Binary values are decoded as UTF-8 (older writers store strings as unannotated binary);
    dates and times become ISO strings and decimals strings, so no precision is lost.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}  # a map column: [(key, value), ...]
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _NotText(f"binary value is not UTF-8 text (byte {exc.start})") from exc
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)  # Decimal, timedelta and anything rarer


def _parquet_fixers(schema: Any) -> dict[str, Callable[[Any], Any]]:
    """Per-column converters that make Parquet values look like their JSON counterparts."""
    import pyarrow as pa

    def is_native(kind: Any) -> bool:
        return bool(
            pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or pa.types.is_integer(kind) or pa.types.is_floating(kind)
            or pa.types.is_boolean(kind) or pa.types.is_null(kind)
        )

    def drop_nulls(value: Any) -> Any:
        value = _plain(value)
        if isinstance(value, dict):
            return {k: x for k, x in value.items() if x is not None}
        return value

    fixers: dict[str, Callable[[Any], Any]] = {}
    for field in schema:
        if pa.types.is_struct(field.type):
            fixers[field.name] = drop_nulls
        elif not is_native(field.type):
            fixers[field.name] = _plain
    return fixers


def _parquet_rows(
    parquet: Any, fixers: dict[str, Callable[[Any], Any]], source: str
) -> Iterator[RawRow]:
    import pyarrow as pa

    index = 0
    batches = parquet.iter_batches(batch_size=2048)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ShardInputError(
                f"Parquet file {source} is corrupt after row {index}: {exc}; re-export the file"
            ) from exc
        try:
            rows: list[Any] = batch.to_pylist()
        except (pa.ArrowException, ValueError, UnicodeDecodeError):
            rows = [_one_parquet_row(batch, position) for position in range(batch.num_rows)]
        for value in rows:
            if isinstance(value, str):  # the row-level conversion failed; value is the reason
                yield RawRow(index=index, row=None, parse_error=value)
            else:
                try:
                    for name, fix in fixers.items():
                        if name in value:
                            value[name] = fix(value[name])
                except _NotText as exc:
                    yield RawRow(index=index, row=None, parse_error=f"column {name!r}: {exc}")
                    index += 1
                    continue
                where = find_unencodable(value)
                if where is not None:
                    yield RawRow(index=index, row=None, parse_error=f"{where}; re-export as UTF-8")
                else:
                    yield RawRow(index=index, row=value, parse_error=None)
            index += 1


def _one_parquet_row(batch: Any, position: int) -> dict[str, Any] | str:
    """Convert a single row of a batch that failed as a whole, returning the reason on failure."""
    try:
        row: dict[str, Any] = batch.slice(position, 1).to_pylist()[0]
    except Exception as exc:  # noqa: BLE001 - any conversion failure is this row's parse error
        return f"cannot convert Parquet row: {exc}"
    return row
