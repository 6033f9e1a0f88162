"""Keep the Airflow process light: refuse torch, transformers, diffusers and Beam imports in it.

Airflow tasks only orchestrate; anything that needs a model or Beam runs as the worker command (a
subprocess here, a pod or a Dataflow job in production), and the Airflow image installs none of them.
In the embedded mode everything is installed, so a task that imports one by mistake would still work
here and only fail in production. :func:`forbid_heavy_imports` makes the mistake fail here too: it
installs an import finder that refuses those packages in this process, naming the module and the code
that imported it. Child processes (the worker, a Beam pipeline) are new interpreters and unaffected.
"""

from __future__ import annotations

import importlib.abc
import sys
import traceback
from collections.abc import Sequence
from typing import Any

HEAVY_PACKAGES = ("torch", "transformers", "diffusers", "apache_beam")
ENV_VAR = "GENBATCH_FORBID_HEAVY_IMPORTS"  # embedded runs install the guard unless it is "0"


class HeavyImportRefused(ImportError):
    """A heavy package was imported in the Airflow process."""


class _HeavyImportGuard(importlib.abc.MetaPathFinder):
    def __init__(self, packages: Sequence[str]) -> None:
        self.packages = frozenset(packages)
        self.refused: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.partition(".")[0] not in self.packages:
            return None
        caller = _first_caller_outside_importlib()
        message = (f"{fullname} imported in the Airflow process by {caller}: Airflow tasks stay light; run this "
                   "through the worker command (a subprocess, a pod or a Beam job) instead")
        self.refused.append(message)
        raise HeavyImportRefused(message)


def _first_caller_outside_importlib() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "importlib" not in frame.filename and not frame.filename.startswith("<frozen"):
            return f"{frame.filename}:{frame.lineno}"
    return "an unknown caller"


def forbid_heavy_imports(packages: Sequence[str] = HEAVY_PACKAGES) -> list[str]:
    """Refuse ``packages`` in this process from now on; returns the list the refusals are recorded in.

    Fails at once when one is already imported: then the guard could not see it.
    """
    already = sorted(m for m in sys.modules if m.partition(".")[0] in packages)
    if already:
        raise HeavyImportRefused(f"already imported in this process before the guard: {', '.join(already[:5])}")
    for finder in sys.meta_path:
        if isinstance(finder, _HeavyImportGuard):
            return finder.refused
    guard = _HeavyImportGuard(packages)
    sys.meta_path.insert(0, guard)
    return guard.refused
