"""torchao lives in a folder of its own, off the venv's import path (``make setup``: ``pip install
--target .venv/torchao``).

transformers imports torchao on every model load whenever it can (its quantizer registry): about
1 s more per worker start and torch log lines that are not JSON on the worker's stderr, while the
worker image has no torchao at all. So only what builds or tests the torchao backend (the torchao
unit test in a child process, ``bench/optimization.py``) puts this folder on its path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIR_ENV = "GENBATCH_TORCHAO_DIR"


def torchao_dir() -> Path:
    """Where ``make setup`` installs torchao (``$GENBATCH_TORCHAO_DIR`` overrides)."""
    return Path(os.environ.get(DIR_ENV) or REPO / ".venv" / "torchao")


def missing() -> str | None:
    """Why torchao cannot be used here, or None when its folder holds it (or it imports anyway: the gpu extra)."""
    if (torchao_dir() / "torchao" / "__init__.py").exists() or importlib.util.find_spec("torchao") is not None:
        return None
    return f"torchao is not installed in {torchao_dir()}: run `make setup` (or set {DIR_ENV})"


def use_in_this_process() -> None:
    """Put the torchao folder on this process's path (a bench process; never a worker)."""
    if str(torchao_dir()) not in sys.path:
        sys.path.append(str(torchao_dir()))


def child_env() -> dict[str, str]:
    """The environment of a child process that may import torchao (and this repo)."""
    paths = [str(torchao_dir()), str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
