"""Example programs shown in the docs are the files the tests run: the docs cannot drift from them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# (example file, the doc that shows it whole)
SHOWN = [("examples/consumer/read_run_gcs.py", "docs/operations.md")]


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


@pytest.mark.parametrize(("example", "doc"), SHOWN)
def test_the_doc_shows_the_example_file_exactly(example: str, doc: str) -> None:
    code = (REPO / example).read_text()
    blocks = python_blocks((REPO / doc).read_text())
    assert blocks, f"{doc} has no python block"
    assert code in blocks, f"{doc} does not show {example} as it is; paste the file into its python block"
