"""The core documents itself briefly: every public definition has a docstring, no module docstring
runs past 12 lines (longer explanations belong in docs/internals.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_MODULE_DOC_LINES = 12


def _public_definitions(nodes: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    for node in nodes:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            yield prefix + node.name, node
            if isinstance(node, ast.ClassDef):
                yield from _public_definitions(node.body, f"{prefix}{node.name}.")


def _core_modules() -> list[Path]:
    modules = sorted((REPO / "genbatch").rglob("*.py"))
    assert len(modules) > 40  # the scan really walks the package
    return modules


def test_every_public_definition_of_the_core_has_a_docstring() -> None:
    missing = [f"{path.relative_to(REPO)}:{node.lineno} {name}"  # type: ignore[attr-defined]
               for path in _core_modules()
               for name, node in _public_definitions(ast.parse(path.read_text()).body)
               if ast.get_docstring(node) is None]  # type: ignore[arg-type]
    assert not missing, "public definitions without a docstring:\n" + "\n".join(missing)


def test_module_docstrings_are_short() -> None:
    long = {}
    for path in _core_modules():
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False)
        if doc is None and path.name != "__main__.py":
            long[str(path.relative_to(REPO))] = 0
        elif doc is not None and len(doc.strip().splitlines()) > MAX_MODULE_DOC_LINES:
            long[str(path.relative_to(REPO))] = len(doc.strip().splitlines())
    assert not long, f"module docstrings missing (0) or over {MAX_MODULE_DOC_LINES} lines: {long}"


def test_the_checks_see_what_they_claim() -> None:
    tree = ast.parse('"""Doc."""\ndef public():\n    pass\ndef _private():\n    pass\nclass C:\n    def m(self):\n        pass\n')
    names = [name for name, node in _public_definitions(tree.body) if ast.get_docstring(node) is None]  # type: ignore[arg-type]
    assert names == ["public", "C", "C.m"]
