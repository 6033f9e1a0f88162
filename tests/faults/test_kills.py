"""SIGKILL and SIGTERM of a real worker subprocess at random points, as fault classes of this suite.

The machinery is the kill-and-resume test's (``tests/integration/test_worker_resume.py``: the real
worker CLI through the harness probe, kills after a random 1-2 committed parts plus 0-12 ms, or
during start-up, then a final attempt) with its checks (exactly once, no partial files, resume
skips committed ids, redone <= 1 batch per kill, injected == observed), run ``--faults-repeat``
kills per signal with this suite's seed, and the figures recorded for ``bench/faults.py``.

Work redone is the worker's own figure (``reconcile`` from the per-attempt records of
``models/attempts.py``); the harness probe's count of model calls is the cross-check, attempt by
attempt (``tests.worker_harness.cross_check_redone``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from genbatch.run.reconcile import reconcile
from tests.faults._support import Figures, record
from tests.integration.test_worker_resume import BATCH, _check, _kill_and_resume, _run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_worker_killed_at_random_points_resumes_exactly_once(sig: signal.Signals, tmp_path: Path, zoo_registry: str,
                                                            faults_repeat: int, faults_seed: int) -> None:
    state = _run(tmp_path, zoo_registry, f"kill-{sig.name.lower()}")
    points = ["parts"] * faults_repeat
    if sig == signal.SIGTERM and faults_repeat >= 3:
        points[1] = "startup"  # one SIGTERM during imports / model load / the resume scan
    t0 = time.monotonic()
    attempts = _kill_and_resume(state, tmp_path, sig, points, seed=faults_seed + int(sig))
    elapsed = time.monotonic() - t0
    killed = attempts[:-1]
    rec = reconcile(state.layout.root, attempt_log=tmp_path / "batches.log")
    record(Figures(f"worker-{sig.name}", injected=sum(a.signalled for a in killed),
                   observed=sum(a.landed for a in killed), lost=rec.items_lost, doubled=rec.items_duplicated,
                   redone=rec.max_work_redone or 0, partial_reads=rec.consumer_partial_reads,
                   seconds=round(elapsed, 2),
                   detail={"redone_per_kill": [a.redone for a in killed], "work_redone": rec.work_redone,
                           "work_redone_probe": rec.work_redone_probe, "attempts": rec.attempts, "batch": BATCH}))
    cross = _check(state, tmp_path, attempts, sig, kills=faults_repeat)
    assert rec.work_redone_probe == sum(a.redone for a in killed)
    # Equal but for the tolerated microsecond window (one batch each, see cross_check_redone).
    assert rec.work_redone is not None
    assert 0 <= rec.work_redone - rec.work_redone_probe <= BATCH * int(cross["tolerated"]), (rec.attempts, cross)
    assert (rec.max_work_redone or 0) <= BATCH
