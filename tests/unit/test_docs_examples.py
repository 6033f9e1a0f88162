"""Code the docs show is code that runs: a docs block that stands for a file is that file, byte for byte."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRIGGER_REST = REPO / "examples" / "consumer" / "trigger_rest.py"


def _python_block_after(text: str, marker: str) -> str:
    """The first ```python block after ``marker`` (its text, without the fences)."""
    start = text.index("```python\n", text.index(marker)) + len("```python\n")
    return text[start:text.index("```\n", start)]


def test_the_rest_trigger_example_in_operations_md_is_the_file() -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    assert _python_block_after(docs, "(../examples/consumer/trigger_rest.py)") == TRIGGER_REST.read_text()


def test_the_rest_trigger_example_needs_only_the_stdlib_and_the_client() -> None:
    """A consumer runs it without genbatch (or Airflow) installed."""
    tree = ast.parse(TRIGGER_REST.read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    roots |= {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert roots - set(sys.stdlib_module_names) == {"airflow_client"}
