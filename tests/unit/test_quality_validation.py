"""Issue 5 additions to input validation: row-count bounds and GX Data Docs."""

from __future__ import annotations

import json

import pytest

from genbatch.io.input_rows import iter_input_rows
from genbatch.quality.expectations import InputSchemaError, data_docs_html, validate_rows


def _rows(n: int) -> list:
    data = "".join(json.dumps({"id": f"r{i}", "prompt": f"prompt {i}"}) + "\n" for i in range(n)).encode()
    return list(iter_input_rows(data, "jsonl", source="mem.jsonl"))


def test_row_count_bounds_stop_the_run_with_what_was_found() -> None:
    assert len(validate_rows(_rows(3), min_rows=3, max_rows=3).accepted) == 3
    with pytest.raises(InputSchemaError, match=r"has 3 rows, outside the expected 1\.\.2") as info:
        validate_rows(_rows(3), max_rows=2, source="mem.jsonl")
    assert info.value.report is not None and info.value.report["settings"]["max_rows"] == 2
    with pytest.raises(InputSchemaError, match=r"has 3 rows, outside the expected 5\.\.unbounded"):
        validate_rows(_rows(3), min_rows=5)
    with pytest.raises(InputSchemaError, match="input has no rows"):
        validate_rows([], min_rows=1)
    with pytest.raises(ValueError, match="row bounds"):
        validate_rows(_rows(1), min_rows=3, max_rows=2)


def test_data_docs_render_the_input_suite_results() -> None:
    outcome = validate_rows(_rows(4))
    page = data_docs_html(outcome.gx_results)
    assert page.lstrip().lower().startswith("<!doctype html") or "<html" in page[:500].lower()
    assert "genbatch.input" in page and "genbatch.input.params" in page  # both suites on one page
    assert "prompt" in page and page.count("</body>") == 1
