"""The one switch every fault injector in the suite obeys, so each fault test can be shown to fail.

``GENBATCH_FAULTS_INJECT=0`` makes every injector stand down (the fault proxy forwards untouched, no
kill is sent, no crash point raises, no disk fills, no weights or input are damaged) while the test
runs the same steps and the same asserts. Every fault test asserts that its fault fired the expected
number of times and that the client saw it, so with injection off each one must fail:
``python -m bench.faults --injection off`` runs them that way and exits non-zero if any passes.
"""

from __future__ import annotations

import os

INJECT_ENV = "GENBATCH_FAULTS_INJECT"


def injection_enabled() -> bool:
    """True unless ``GENBATCH_FAULTS_INJECT=0`` (read each call: a test may flip it)."""
    return os.environ.get(INJECT_ENV, "1").strip() != "0"
