"""Reading run inputs: every bad row becomes a RawRow with a parse error, never an exception."""

from __future__ import annotations

import datetime
import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genbatch.errors import ShardInputError
from genbatch.io import input_rows
from genbatch.io.input_rows import RawRow, detect_format, iter_input_rows, read_input_file


def _jsonl(*lines: str, sep: str = "\n") -> bytes:
    return sep.join(lines).encode("utf-8")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


# --- JSONL -------------------------------------------------------------------------------------


def test_jsonl_bom_crlf_and_blank_lines() -> None:
    data = b"\xef\xbb\xbf" + _jsonl('{"id": "a", "prompt": "x"}', "", "   ", '{"id": "b", "prompt": "y"}', "", sep="\r\n")
    rows = list(iter_input_rows(data, "jsonl"))
    assert [r.row for r in rows] == [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}]
    assert [r.index for r in rows] == [0, 1]  # blank lines are not rows
    assert [r.line for r in rows] == [1, 4]  # but line numbers point into the file
    assert all(r.parse_error is None for r in rows)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"id": "a", "prompt": ', "broken JSON"),
        (b'{"id": "a", "prompt": "unterminated', "broken JSON: Unterminated string starting at column 23"),
        (b'{"id": "a"} trailing', "broken JSON: Extra data at column 13"),
        (b"[1, 2]", "array, not a JSON object"),
        (b'"just a string"', "string, not a JSON object"),
        (b"null", "null, not a JSON object"),
        (b'{"id": "a", "prompt": "caf\xe9"}', "invalid UTF-8"),
        (b'{"id": "a", "prompt": "x\x00y"}', "NUL byte"),
        (b'{"id": "a", "prompt": "\\ud800"}', "unpaired surrogate U+D800"),
        (b'{"id": "a", "params": {"\\udfff": 1}}', "unpaired surrogate U+DFFF"),
        (b'{"id": "a", "seed": ' + b"9" * 5000 + b"}", "broken JSON"),
        (b'{"id": "a", "prompt": "x"' + b"[" * 100_000, "broken JSON"),
    ],
)
def test_jsonl_bad_line_is_a_parse_error(line: bytes, expected: str) -> None:
    rows = list(iter_input_rows(b'{"id": "ok", "prompt": "fine"}\n' + line + b'\n{"id": "ok2", "prompt": "y"}\n', "jsonl"))
    assert len(rows) == 3
    assert rows[0].parse_error is None and rows[2].parse_error is None
    bad = rows[1]
    assert bad.row is None
    assert bad.parse_error is not None and expected in bad.parse_error
    assert len(bad.parse_error) < 400  # never echoes a huge line back


def test_jsonl_surrogate_pair_is_fine() -> None:
    (row,) = list(iter_input_rows(b'{"id": "a", "prompt": "smile \\ud83d\\ude00"}', "jsonl"))
    assert row.parse_error is None and row.row == {"id": "a", "prompt": "smile \U0001f600"}


def test_jsonl_huge_line_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    big = "x" * 10_000_000
    (row,) = list(iter_input_rows(json.dumps({"id": "big", "prompt": big}).encode(), "jsonl"))
    assert row.row is not None and len(row.row["prompt"]) == 10_000_000
    monkeypatch.setattr(input_rows, "MAX_ROW_BYTES", 1000)
    (row,) = list(iter_input_rows(json.dumps({"id": "big", "prompt": big}).encode(), "jsonl"))
    assert row.row is None and row.parse_error is not None and "row limit" in row.parse_error


def test_random_garbage_never_raises() -> None:
    rng = random.Random(7)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))).replace(b"\n", b"") for _ in range(300)]
    data = b"\n".join(lines)
    rows = list(iter_input_rows(data, "jsonl"))
    non_blank = [line for line in lines if line.rstrip(b"\r").strip()]
    assert len(rows) == len(non_blank)
    assert [r.index for r in rows] == list(range(len(rows)))
    for r in rows:
        assert (r.row is None) != (r.parse_error is None)
    csv_rows = list(iter_input_rows(b"id,prompt\n" + data, "csv"))
    assert all((r.row is None) != (r.parse_error is None) for r in csv_rows)


def test_utf16_file_is_refused_as_a_whole() -> None:
    data = '{"id": "a", "prompt": "x"}\n'.encode("utf-16")
    with pytest.raises(ShardInputError, match="UTF-16.*UTF-8"):
        iter_input_rows(data, "jsonl")


# --- formats and files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("in.jsonl", None, "jsonl"),
        ("in.NDJSON", None, "jsonl"),
        ("dir/in.csv", None, "csv"),
        ("in.parquet", None, "parquet"),
        ("whatever.bin", "CSV", "csv"),
        ("whatever.bin", ".parquet", "parquet"),
    ],
)
def test_detect_format(name: str, fmt: str | None, expected: str) -> None:
    assert detect_format(name, fmt) == expected


def test_unknown_format_is_refused_early() -> None:
    with pytest.raises(ShardInputError, match=r"unknown input format 'xml'.*jsonl, csv, parquet"):
        iter_input_rows(b"", "xml")  # raised on the call, not on first next()
    with pytest.raises(ShardInputError, match=r"data\.txt.*\.txt.*rename"):
        detect_format("data.txt")


def test_read_input_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "x"}\n')
    assert [r.row for r in read_input_file(path)] == [{"id": "a", "prompt": "x"}]
    with pytest.raises(ShardInputError, match="missing.jsonl"):
        read_input_file(tmp_path / "missing.jsonl")
    with pytest.raises(ShardInputError, match="local path"):
        read_input_file("gs://bucket/in.jsonl")


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_types_bom_crlf_and_quoting() -> None:
    data = (
        "\ufeffid,prompt,seed,params,negative_prompt,extra\r\n"
        'a1,"hello, world",42,"{""temperature"": 0.5}",blurry,x\r\n'
        '007,"two\r\nlines",-1,,,\r\n'
        ",,,,,\r\n"
        "\r\n"
        "a3,p,1.5,[1],,\r\n"
    ).encode()
    rows = list(iter_input_rows(data, "csv"))
    assert [r.parse_error for r in rows] == [None, None, None]
    assert rows[0].row == {
        "id": "a1",
        "prompt": "hello, world",
        "seed": 42,
        "params": {"temperature": 0.5},
        "negative_prompt": "blurry",
        "extra": "x",
    }
    # ids stay strings, signed digit seeds become ints, empty cells mean "not given".
    assert rows[1].row == {"id": "007", "prompt": "two\r\nlines", "seed": -1}
    assert rows[2].row == {"id": "a3", "prompt": "p", "seed": "1.5", "params": "[1]"}
    assert [r.index for r in rows] == [0, 1, 2]
    assert [r.line for r in rows] == [2, 3, 7]


def test_csv_bad_rows_are_parse_errors() -> None:
    data = b'id,prompt\na,ok\nb\nc,"x\x00"\nd,caf\xe9\ne,"x"y\nf,ok\n'
    rows = list(iter_input_rows(data, "csv"))
    errors = [r.parse_error for r in rows]
    assert errors[0] is None and errors[-1] is None
    assert "1 fields but the header has 2" in str(errors[1])
    assert "NUL" in str(errors[2])
    assert "invalid UTF-8" in str(errors[3])
    assert "broken CSV" in str(errors[4])
    assert rows[-1].row == {"id": "f", "prompt": "ok"}


def test_csv_huge_seed_and_field_stay_strings() -> None:
    big = "x" * 1_000_000  # over csv's default 128 KiB field limit
    data = f"id,prompt,seed\na,{big},{'9' * 5000}\n".encode()
    (row,) = list(iter_input_rows(data, "csv"))
    assert row.row is not None and len(row.row["prompt"]) == 1_000_000
    assert row.row["seed"] == "9" * 5000


def test_csv_duplicate_header_is_refused() -> None:
    with pytest.raises(ShardInputError, match="repeats the column 'prompt'"):
        list(iter_input_rows(b"id,prompt,prompt\na,b,c\n", "csv"))


# --- Parquet -----------------------------------------------------------------------------------


def test_parquet_rows_become_json_shapes(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": ["p1", "p2", "p3"],
            "prompt": pa.array([b"caf\xc3\xa9", b"ok", b"\xff"], pa.binary()),
            "seed": pa.array([1, None, 2**63], pa.uint64()),
            "params": pa.array(
                [[("temperature", 0.1)], None, [("top_p", 0.5)]], pa.map_(pa.string(), pa.float64())
            ),
            "style": pa.array([{"a": 1, "b": None}, None, {"a": None, "b": 2}]),
            "made": pa.array([datetime.date(2024, 1, 2)] * 3),
        }
    )
    path = tmp_path / "in.parquet"
    path.write_bytes(_parquet_bytes(table))
    rows = list(read_input_file(path))
    assert rows[0] == RawRow(
        index=0,
        row={
            "id": "p1",
            "prompt": "café",
            "seed": 1,
            "params": {"temperature": 0.1},
            "style": {"a": 1},
            "made": "2024-01-02",
        },
    )
    assert rows[1].row is not None and rows[1].row["seed"] is None and rows[1].row["params"] is None
    assert rows[2].row is None and "not UTF-8" in str(rows[2].parse_error)
    json.dumps([r.row for r in rows])  # everything a later stage writes as JSONL


def test_parquet_unreadable_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_bytes(b'{"id": "a", "prompt": "x"}\n')
    with pytest.raises(ShardInputError, match=r"in\.parquet as Parquet.*check that the file is Parquet"):
        read_input_file(path)


def test_parquet_empty_table_has_no_rows() -> None:
    empty: dict[str, Any] = {"id": pa.array([], pa.string()), "prompt": pa.array([], pa.string())}
    assert list(iter_input_rows(_parquet_bytes(pa.table(empty)), "parquet")) == []
