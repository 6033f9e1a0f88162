"""The garbage collector set for genbatch's own short-lived processes: the CLI, the worker, the Beam job.

CPython's cyclic collector is tuned for a steady heap. Ours grow from nothing to millions of objects while
they import Airflow, Great Expectations, pandas, Beam or torch, and each quarter of growth costs a full
traversal: about 2 s of collections in a 300-row ``genbatch run``. At exit the interpreter traverses the
whole heap again while it tears the modules down: 2.5 s more, after the run's work is done.
:func:`run_as_process` collects the youngest generation less often, and freezes the heap once the work is
done, so that the exit skips those traversals; :func:`start_up_done` freezes what a start-up built, so
the work's own full collections skip it too. Reference counting still frees every object as before; only
cyclic garbage that a freeze keeps goes with the process. Measured in ``bench/process_gc.py``
(docs/benchmarks.md). Tests and other callers of a ``main`` keep the interpreter's defaults.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import NoReturn

YOUNG_COLLECTION_THRESHOLD = 10_000
"""Net allocations between collections of the youngest generation (CPython's default: 700). Higher values
gained nothing more in the measurement; the two older generations keep their defaults."""

_whole_process = False  # set by run_as_process: only then may a freeze keep this process's objects for good


def tune_collector() -> None:
    """Collect the youngest generation every :data:`YOUNG_COLLECTION_THRESHOLD` allocations, not every 700:
    a start-up's import objects survive anyway, and fewer young collections mean fewer full ones."""
    young, middle, old = gc.get_threshold()
    if 0 < young < YOUNG_COLLECTION_THRESHOLD:  # 0: the collector was switched off; leave it off
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def run_as_process(main: Callable[[], int | None]) -> NoReturn:
    """Run ``main`` as this process's whole work and exit with its code: the collector is tuned first, and
    the heap is frozen when ``main`` returns or raises, so the interpreter's exit does not traverse it."""
    global _whole_process
    _whole_process = True
    tune_collector()
    try:
        code = main()
    finally:
        gc.freeze()
    raise SystemExit(code)


def start_up_done() -> bool:
    """Freeze every object this process holds now, in a process :func:`run_as_process` runs: what its
    start-up imported and built lives until exit, so later full collections need not traverse it (in an
    embedded run: the full collection left during ``dag.test``). Elsewhere (a test calling ``main``)
    nothing changes. Returns whether it froze."""
    if _whole_process:
        gc.freeze()
    return _whole_process
