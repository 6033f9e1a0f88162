"""Fixtures of the fault-injection suite: repeats, seeds, the zoo registry, the fault proxy.

``--faults-repeat N`` (or ``GENBATCH_FAULTS_REPEAT=N``) sets how many times each fault class
runs with fresh random injection points (default 5); ``GENBATCH_FAULTS_SEED`` changes the seed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.gcs_emulator import GcsEmulator
from genbatch.io import storage
from tests.fault_proxy import FaultProxy
from tests.faults._support import REPEAT_ENV, SEED_ENV
from tests.faults.enospc import NoCompiler, build_shim

DEFAULT_REPEAT = 5
DEFAULT_SEED = 20260315


def pytest_addoption(parser: pytest.Parser) -> None:
    # Honoured when pytest starts from tests/faults; from the repo root the same lines belong in
    # tests/conftest.py (then this one finds the option already there).
    try:
        parser.addoption("--faults-repeat", type=int, default=None,
                         help=f"repeats per fault class in tests/faults (default {DEFAULT_REPEAT}, or ${REPEAT_ENV})")
    except ValueError:
        pass


@pytest.fixture(scope="session")
def faults_repeat(pytestconfig: pytest.Config) -> int:
    option = pytestconfig.getoption("--faults-repeat", default=None)
    value = option if option is not None else int(os.environ.get(REPEAT_ENV, DEFAULT_REPEAT))
    if value < 1:
        raise pytest.UsageError(f"--faults-repeat must be >= 1, got {value}")
    return int(value)


@pytest.fixture(scope="session")
def faults_seed() -> int:
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


@pytest.fixture(scope="session")
def enospc_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ENOSPC injector (tests/faults/enospc.c), compiled for this machine; no compiler fails, never skips."""
    try:
        return build_shim(tmp_path_factory.mktemp("enospc"))
    except NoCompiler as exc:
        pytest.fail(str(exc))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"compiling the ENOSPC injector failed: {exc.stderr}")


@pytest.fixture(scope="session")
def zoo_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local registry with the shipped tiny models (catalog-copy v1/v2, tiny-image v1)."""
    from models.zoo.seed import ensure_zoo_registered

    root = str(tmp_path_factory.mktemp("faults-registry"))
    ensure_zoo_registered(root)
    return root


@pytest.fixture(scope="session")
def fault_proxy(gcs_emulator: GcsEmulator) -> Iterator[FaultProxy]:
    """One proxy for the session in front of the session's fake-gcs-server."""
    with FaultProxy(gcs_emulator.url) as proxy:
        yield proxy


@pytest.fixture
def proxied_gcs(fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """The client talks to the proxy for this test; rules and the request log start empty."""
    fault_proxy.clear()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    storage.reset_client()
    try:
        yield fault_proxy
    finally:
        errors = list(fault_proxy.handler_errors)
        fault_proxy.handler_errors.clear()
        fault_proxy.clear()
        storage.reset_client()
    assert not errors, f"the fault proxy itself failed: {errors[0]}"
