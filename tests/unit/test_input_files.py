"""Glob matching and per-file formats of ``genbatch.io.input_files``: pure functions, no backend."""

from __future__ import annotations

import pytest

from genbatch.errors import ShardInputError, SpecError
from genbatch.io.input_files import file_format, glob_regex, is_many


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.jsonl", "a.jsonl", True),
        ("*.jsonl", "sub/a.jsonl", False),  # * stays inside one folder
        ("**/*.jsonl", "a.jsonl", True),  # **/ also matches no folder
        ("**/*.jsonl", "x/y/a.jsonl", True),
        ("part-?.csv.gz", "part-1.csv.gz", True),
        ("part-?.csv.gz", "part-10.csv.gz", False),
        ("part-[0-4].csv", "part-3.csv", True),
        ("part-[!0-4].csv", "part-3.csv", False),
        ("part-[!0-4].csv", "part-7.csv", True),
        ("a.b", "aXb", False),  # a dot is literal
        ("*", "x/y", False),
    ],
)
def test_glob_regex(pattern: str, path: str, matches: bool) -> None:
    assert bool(glob_regex(pattern).match(path)) is matches


def test_an_unclosed_class_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"'\[' without its '\]'"):
        glob_regex("part-[0-9.jsonl")


def test_is_many() -> None:
    assert is_many("gs://b/new/*.jsonl") and is_many("data/") and is_many("data/part-?.csv")
    assert not is_many("gs://b/new/in.jsonl") and not is_many("data/in.csv.gz")


@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("gs://b/x/part-1.jsonl.gz", None, ("jsonl", "gzip")),
        ("data/a.CSV.GZ", None, ("csv", "gzip")),
        ("data/a.parquet", None, ("parquet", None)),
        ("data/a.txt.gz", "jsonl", ("jsonl", "gzip")),  # an explicit format wins over the name
    ],
)
def test_file_format(name: str, fmt: str | None, expected: tuple[str, str | None]) -> None:
    assert file_format(name, fmt) == expected


def test_gzipped_parquet_and_unknown_extensions_are_refused_by_name() -> None:
    with pytest.raises(ShardInputError, match=r"data/a\.parquet\.gz is gzipped Parquet"):
        file_format("data/a.parquet.gz")
    with pytest.raises(ShardInputError, match=r"data/notes\.txt.*rename it to \.jsonl"):
        file_format("data/notes.txt")
