"""Code the docs show is code that runs: a docs block that stands for a file is that file, byte for byte,
and the consumer examples need nothing of genbatch (or Airflow) installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.unit.test_import_direction import imported_modules

REPO = Path(__file__).resolve().parents[2]
# example file (run by a test) -> the doc that shows it whole, and the only non-stdlib package it may import
EXAMPLES = {
    "examples/consumer/read_run_gcs.py": ("docs/operations.md", "google"),  # tests/integration/test_batch_run.py
    "examples/consumer/trigger_rest.py": ("docs/operations.md", "airflow_client"),  # tests/integration/test_airflow_stack.py
}


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks of a markdown text."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_doc_shows_the_example_file_exactly(example: str) -> None:
    doc = EXAMPLES[example][0]
    assert (REPO / example).read_text() in python_blocks((REPO / doc).read_text()), (
        f"{doc} does not show {example} as it is; paste the file into its python block")


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_example_needs_only_the_stdlib_and_one_client(example: str) -> None:
    roots = {module.split(".")[0] for _, module in imported_modules((REPO / example).read_text())}
    assert roots - set(sys.stdlib_module_names) == {EXAMPLES[example][1]}
