"""Listing a run's input files (globs, prefixes, gzip, limits) on a local folder and on fake-gcs-server,
and reading their rows in order: the real storage backends, no mocks."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import PathNotAllowedError, ShardInputError, SpecError
from genbatch.io import storage
from genbatch.io.input_files import InputLimits, iter_rows_of_files, list_input_files

pytestmark = pytest.mark.integration

ROOMY = InputLimits(max_files=100, max_file_bytes=10**9, max_total_bytes=10**9)


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _rows(prefix: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i}", "prompt": f"p {prefix} {i}"} for i in range(n)]


@pytest.fixture
def files(storage_root: str) -> str:
    """Under ``<root>/in/``: three JSONL parts (one gzipped), a CSV, a nested part, and writers' bookkeeping."""
    root = storage.join(storage_root, "in")
    storage.write_bytes(storage.join(root, "part-0.jsonl"), _jsonl(_rows("a", 3)))
    storage.write_bytes(storage.join(root, "part-1.jsonl.gz"), gzip.compress(_jsonl(_rows("b", 2))))
    storage.write_bytes(storage.join(root, "part-2.jsonl"), _jsonl(_rows("c", 1)) + b"{broken\n")
    storage.write_bytes(storage.join(root, "part-3.csv"), b"id,prompt\nd-0,hello\nd-1,world\n")
    storage.write_bytes(storage.join(root, "more", "part-4.jsonl"), _jsonl(_rows("e", 2)))
    storage.write_bytes(storage.join(root, "_SUCCESS"), b"")
    storage.write_bytes(storage.join(root, "_temporary", "x.jsonl"), b"not data\n")
    return root


def _names(found: list[Any]) -> list[str]:
    return [f.uri.rsplit("/in/", 1)[1] for f in found]


def test_a_glob_matches_one_folder_sorted_with_formats(files: str) -> None:
    found = list_input_files(storage.join(files, "part-*"), None, ROOMY)
    assert _names(found) == ["part-0.jsonl", "part-1.jsonl.gz", "part-2.jsonl", "part-3.csv"]
    assert [(f.format, f.compression) for f in found] == [("jsonl", None), ("jsonl", "gzip"), ("jsonl", None),
                                                          ("csv", None)]
    assert all(f.bytes == storage.size(f.uri) and f.version for f in found)
    assert _names(list_input_files(storage.join(files, "**/*.jsonl"), None, ROOMY)) == [
        "more/part-4.jsonl", "part-0.jsonl", "part-2.jsonl"]


def test_a_prefix_takes_every_file_but_bookkeeping(files: str) -> None:
    found = list_input_files(files + "/", None, ROOMY)
    assert _names(found) == ["more/part-4.jsonl", "part-0.jsonl", "part-1.jsonl.gz", "part-2.jsonl", "part-3.csv"]


def test_rows_are_numbered_across_files_in_order(files: str) -> None:
    found = list_input_files(storage.join(files, "part-*"), None, ROOMY)
    counts: list[int] = []
    rows = list(iter_rows_of_files(found, counts))
    assert counts == [3, 2, 2, 2]
    assert [r.index for r in rows] == list(range(9))
    assert [r.row["id"] for r in rows if r.row] == ["a-0", "a-1", "a-2", "b-0", "b-1", "c-0", "d-0", "d-1"]
    (broken,) = [r for r in rows if r.parse_error]
    assert broken.index == 6 and (broken.parse_error or "").startswith(f"{found[2].uri} line 2: broken JSON")


def test_an_empty_match_names_the_input(files: str) -> None:
    with pytest.raises(ShardInputError, match=r"input '.*/in/nothing-\*\.jsonl' matches no file; check input\.uri"):
        list_input_files(storage.join(files, "nothing-*.jsonl"), None, ROOMY)
    with pytest.raises(ShardInputError, match=r"input '.*/in/gone\.jsonl' does not exist"):
        list_input_files(storage.join(files, "gone.jsonl"), None, ROOMY)


def test_limits_name_the_file_and_the_setting(files: str) -> None:
    pattern = storage.join(files, "part-*")
    with pytest.raises(SpecError, match=r"matches 4 files, over input\.max_files=3 .*raise input\.max_files"):
        list_input_files(pattern, None, InputLimits(max_files=3, max_file_bytes=10**9, max_total_bytes=10**9))
    big = storage.size(storage.join(files, "part-0.jsonl"))
    with pytest.raises(SpecError, match=r"input file '.*/in/part-0\.jsonl' is \d+ bytes, over the limit of 40 bytes "
                                        r"\(input\.max_file_bytes=40, GENBATCH_MAX_INPUT_BYTES=unset\)"):
        list_input_files(pattern, None, InputLimits(max_files=9, max_file_bytes=40, max_total_bytes=10**9))
    with pytest.raises(SpecError, match=rf"\(4 files\) is \d+ bytes, over the limit of {big + 1} bytes "
                                        r".*input\.max_total_bytes"):
        list_input_files(pattern, None, InputLimits(max_files=9, max_file_bytes=10**9, max_total_bytes=big + 1))
    with pytest.raises(SpecError, match=r"over the limit of 50 bytes .*GENBATCH_MAX_INPUT_BYTES=50"):
        list_input_files(pattern, None, InputLimits(max_files=9, max_file_bytes=10**9, max_total_bytes=10**9,
                                                    ceiling_bytes=50))


def test_a_file_of_unknown_format_under_a_prefix_is_named(files: str) -> None:
    storage.write_bytes(storage.join(files, "notes.txt"), b"hello\n")
    with pytest.raises(ShardInputError, match=r"input file .*/in/notes\.txt: cannot tell the format"):
        list_input_files(files + "/", None, ROOMY)
    assert len(list_input_files(files + "/", "jsonl", ROOMY)) == 6  # an explicit format covers every file


def test_a_broken_gzip_file_is_named(files: str) -> None:
    storage.write_bytes(storage.join(files, "bad.jsonl.gz"), b"plain text, not gzip\n")
    found = list_input_files(storage.join(files, "bad.jsonl.gz"), None, ROOMY)
    with pytest.raises(ShardInputError, match=r"input file .*/in/bad\.jsonl\.gz is not valid gzip"):
        list(iter_rows_of_files(found))


def test_globs_stay_confined(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "a.jsonl").write_bytes(_jsonl(_rows("a", 1)))
    (outside / "secret.jsonl").write_bytes(_jsonl(_rows("s", 1)))
    os.symlink(outside / "secret.jsonl", allowed / "link.jsonl")
    with pytest.raises(PathNotAllowedError, match=r"input file .*link\.jsonl matched by .*outside the allowed"):
        list_input_files(f"{allowed}/*.jsonl", None, ROOMY, allowed=[str(allowed)])
    with pytest.raises(PathNotAllowedError, match="outside the allowed prefixes"):
        list_input_files(f"{outside}/*.jsonl", None, ROOMY, allowed=[str(allowed)])
    os.unlink(allowed / "link.jsonl")
    assert len(list_input_files(f"{allowed}/*.jsonl", None, ROOMY, allowed=[str(allowed)])) == 1


# --- input.row_rules: pipeline: validate_input checks a bounded sample only -----------------------------


def test_the_sample_check_reads_a_bounded_head_and_stops_on_a_missing_column(storage_root: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from genbatch.quality.expectations import InputSchemaError
    from genbatch.stages import validate
    from tests.helpers import prepared_run

    root = storage.join(storage_root, "drift")
    storage.write_bytes(storage.join(root, "a-0.jsonl.gz"), gzip.compress(_jsonl(_rows("a", 50))))
    # The second file drifted (no prompt column): rows the sample never reaches under a small budget.
    storage.write_bytes(storage.join(root, "a-1.jsonl"), _jsonl([{"id": f"x{i}", "text": "t"} for i in range(50)]))
    state = prepared_run(storage.join(storage_root, "runs"), run_id="sample",
                         input={"uri": storage.join(root, "*.jsonl*"), "row_rules": "pipeline"})
    monkeypatch.setattr(validate, "SAMPLE_ROWS", 20)
    assert validate.validate_input(state) == {"sampled": 20, "files": 2, "sample_rejected": 0}
    assert not storage.exists(state.layout.validation_accepted)  # row verdicts are the Beam job's
    sample = storage.read_json(state.layout.validation_sample)["great_expectations"]
    assert sample["row_count"] == 20 and sample["success"]

    monkeypatch.setattr(validate, "SAMPLE_ROWS", 1000)
    monkeypatch.setattr(validate, "SAMPLE_BYTES", 200)  # a few rows of each file; the cut row is dropped
    broken = prepared_run(storage.join(storage_root, "runs"), run_id="sample-2",
                          input={"uri": storage.join(root, "a-1.jsonl"), "row_rules": "pipeline"})
    with pytest.raises(InputSchemaError, match=r"a sample of its first \d+ rows\) has no 'prompt' column.*'text'"):
        validate.validate_input(broken)
    report = storage.read_json(broken.layout.validation_report)
    assert report["validated_by"] == "sample" and "no 'prompt' column" in report["failure"]
    assert 0 < report["rows"]["sampled"] < 50
