"""Dependencies point one way (DESIGN.md §1): dags → operators → (models | beam_jobs) → genbatch.

Imports are read with ``ast`` (module level and inside functions alike), so a lazy import that runs
back up fails here just as a top-level one does. Inside ``genbatch`` the subpackages are layered in
data-flow order and each may import only the layers below it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Top-level packages, and the ones each may never import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "genbatch": frozenset({"models", "beam_jobs", "operators", "dags", "devstack"}),
    "models": frozenset({"beam_jobs", "operators", "dags", "devstack"}),
    "beam_jobs": frozenset({"models", "operators", "dags", "devstack", "airflow"}),
    "operators": frozenset({"dags", "devstack"}),
    "dags": frozenset({"models", "beam_jobs", "devstack"}),
}
# genbatch's own layers, lowest first: a module may import its own layer and the ones before it.
CORE_LAYERS = ("errors", "io", "run", "plan", "quality", "schedule", "stages", "ops", "cli")


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every absolute import in ``source``, wherever it sits."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            if node.module == "genbatch":  # `from genbatch import storage` names a submodule
                for alias in node.names:
                    yield node.lineno, f"genbatch.{alias.name}"


def core_layer(module: str) -> int | None:
    """The layer index of a ``genbatch.<layer>...`` module; None for the package root itself."""
    parts = module.split(".")
    if parts[0] != "genbatch" or len(parts) < 2 or parts[1] in {"__version__", "__main__"}:
        return None
    return CORE_LAYERS.index(parts[1]) if parts[1] in CORE_LAYERS else None


def violations(package: str, path: str, source: str) -> list[str]:
    """Every import in ``source`` (a file of ``package``, named ``path``) that runs against the arrows."""
    found = []
    own_layer = core_layer(path.removesuffix(".py").replace("/", ".")) if package == "genbatch" else None
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top in FORBIDDEN.get(package, ()):
            found.append(f"{path}:{line}: {package} imports {module}")
        elif package == "genbatch" and own_layer is not None:
            layer = core_layer(module)
            if layer is not None and layer > own_layer:
                found.append(f"{path}:{line}: genbatch.{CORE_LAYERS[own_layer]} imports {module}, a higher layer")
    return found


def package_files() -> Iterator[tuple[str, Path]]:
    for package in FORBIDDEN:
        for path in sorted((REPO / package).rglob("*.py")):
            yield package, path


def test_every_package_is_scanned() -> None:
    scanned = {package for package, _ in package_files()}
    assert scanned == set(FORBIDDEN)
    assert sum(1 for _ in package_files()) > 60  # the scan really walks the tree


def test_no_import_runs_back_up() -> None:
    found = [v for package, path in package_files()
             for v in violations(package, path.relative_to(REPO).as_posix(), path.read_text())]
    assert not found, "imports against the dependency direction:\n" + "\n".join(found)


def test_every_core_module_sits_in_a_layer() -> None:
    loose = [p.name for p in (REPO / "genbatch").glob("*.py") if p.stem not in {"__init__", "__main__", "errors"}]
    folders = sorted(p.name for p in (REPO / "genbatch").iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert not loose, f"modules outside the layered subpackages: {loose}"
    assert folders == sorted(CORE_LAYERS[1:])


@pytest.mark.parametrize("statement", [
    "from models import registry",
    "from models.registry import resolve",
    "import beam_jobs.preprocess",
    "def f():\n    from operators.generate import LOCAL_TASK\n",
    "import dags.batch_generation",
])
def test_the_check_catches_an_upward_import(statement: str) -> None:
    assert violations("genbatch", "genbatch/run/spec.py", statement)


@pytest.mark.parametrize(("path", "statement", "bad"), [
    ("genbatch/io/storage.py", "from genbatch.run.layout import RunLayout", True),
    ("genbatch/run/spec.py", "from genbatch.stages.prepare import prepare_run", True),
    ("genbatch/stages/quality.py", "from genbatch.ops import logs", True),
    ("genbatch/stages/quality.py", "from genbatch.quality.gates import evaluate_gates", False),
    ("genbatch/cli/commands.py", "from genbatch.ops.erasure import erase", False),
])
def test_the_check_enforces_core_layers(path: str, statement: str, bad: bool) -> None:
    assert bool(violations("genbatch", path, statement)) is bad
