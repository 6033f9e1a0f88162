"""The orchestrating task SIGKILLed while its worker runs, then retried: no orphan, no second worker.

The local backend's launcher (``genbatch.stages.generate.run_worker_process``, what ``GenerateShardOperator``
calls) runs as its own process (``python -m tests.worker_harness launch``, the launcher with the
worker started through the harness probe). It is SIGKILLed at a random point — while its worker
imports and loads the model, or mid-shard once the worker committed a random 1-2 more parts plus
0-12 ms — and started again, as an Airflow retry would. Alternate repeats retry at once (the retry
must deal with a worker that is still running) or first wait for the orphan to exit by itself
(proof that it dies with its launcher; a single repeat waits). Then a last launch finishes the shard.
With injection off no launcher is killed and the test fails.

Checks: every kill hit a live launcher and landed mid-shard (injected == observed, where observed
also means the orphaned worker was gone before the next worker began); no worker process is left
running at the end; the attempt records show no two attempts overlapping in time; reconcile: nothing
lost or doubled, work redone <= 1 batch per kill, and the records agree with the probe.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from genbatch.run.reconcile import reconcile
from genbatch.run.state import RunState
from genbatch.stages.generate import ENV_LEASE_DIR, _start_ticks, read_lease
from tests.faults._support import Figures, record
from tests.injection import injection_enabled
from tests.integration.test_worker_resume import BATCH, N_ITEMS, _committed_count, _run
from tests.worker_harness import (
    BATCH_LOG_ENV,
    attempt_records,
    cross_check_redone,
    launcher_cmd,
    read_batch_log,
    scan_outputs,
    worker_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 120.0
ORPHAN_EXIT_S = 30.0  # an orphan finishes its batch in flight (ms here) or its model load (seconds)


@dataclass
class Launch:
    launcher_pid: int
    worker_pid: int | None
    worker_ticks: int | None
    point: str
    signalled: bool
    returncode: int
    landed: bool = False
    orphan_gone_s: float | None = None  # how long the orphan outlived the launcher (waiting repeats)


def _wait_lease(run_dir: str, launcher_pid: int, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        lease = read_lease(run_dir, 0)
        if lease and lease.get("launcher_pid") == launcher_pid:
            return lease
        time.sleep(0.005)
    return None


def _running(pid: int | None, ticks: int | None) -> bool:
    return pid is not None and ticks is not None and _start_ticks(pid) == ticks


def _launch(state: RunState, tmp_path: Path, env: dict[str, str], n: int, point: str | None,
            rng: random.Random) -> Launch:
    outputs_dir = Path(state.layout.outputs_dir(0))
    before = _committed_count(outputs_dir)
    with (tmp_path / f"launch-{n:02d}.log").open("w") as logf:
        proc = subprocess.Popen(launcher_cmd(state.layout.root), env=env, stdout=logf, stderr=subprocess.STDOUT)
        try:
            lease = _wait_lease(state.layout.root, proc.pid, proc)
            worker_pid = lease["worker_pid"] if lease else None
            worker_ticks = lease["worker_ticks"] if lease else None
            signalled = False
            if point == "loading":
                time.sleep(rng.uniform(0.05, 2.0))
            elif point == "parts":
                target = before + rng.randint(1, 2)
                deadline = time.monotonic() + TIMEOUT_S
                while proc.poll() is None and _committed_count(outputs_dir) < target and time.monotonic() < deadline:
                    time.sleep(0.001)
                if proc.poll() is None:
                    time.sleep(rng.uniform(0.0, 0.012))
            if point is not None and proc.poll() is None and injection_enabled():
                os.kill(proc.pid, signal.SIGKILL)
                signalled = True
            rc = proc.wait(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Launch(proc.pid, worker_pid, worker_ticks, point or "final", signalled, rc)


def test_launcher_killed_and_retried_leaves_no_orphan_and_runs_one_worker_at_a_time(
        tmp_path: Path, zoo_registry: str, faults_repeat: int, faults_seed: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(faults_seed + 77)
    monkeypatch.setenv(ENV_LEASE_DIR, str(tmp_path / "leases"))  # the launchers' and this test's view
    state = _run(tmp_path, zoo_registry, "launcher-kill")
    log_path = tmp_path / "batches.log"
    env = {**worker_env(), BATCH_LOG_ENV: str(log_path)}
    points = ["parts" if rng.random() < 0.7 else "loading" for _ in range(faults_repeat)]
    points[0] = "parts"
    if faults_repeat >= 2:
        points[1] = "loading"  # at least one kill while the worker is still loading (the lease path)
    launches: list[Launch] = []
    t0 = time.monotonic()
    for n, point in enumerate(points):
        launch = _launch(state, tmp_path, env, n, point, rng)
        launches.append(launch)
        manifest_exists = Path(state.layout.shard_manifest(0)).exists()
        launch.landed = launch.signalled and launch.returncode == -signal.SIGKILL and not manifest_exists
        if n % 2 == 1 or len(points) == 1:  # wait for the orphan to go by itself: it must die with its launcher
            t_kill = time.monotonic()
            while _running(launch.worker_pid, launch.worker_ticks) and time.monotonic() - t_kill < ORPHAN_EXIT_S:
                time.sleep(0.01)
            launch.orphan_gone_s = round(time.monotonic() - t_kill, 3)
        if not launch.landed:
            break
    final = _launch(state, tmp_path, env, len(launches), None, rng)
    launches.append(final)
    elapsed = time.monotonic() - t0
    killed = launches[:-1]

    logs = [(tmp_path / f"launch-{n:02d}.log").read_text() for n in range(len(launches))]
    stale_stops = sum(text.count("outlived its launcher") for text in logs)
    left_running = [ln.worker_pid for ln in launches if _running(ln.worker_pid, ln.worker_ticks)]
    records = attempt_records(state.layout)
    rec = reconcile(state.layout.root, attempt_log=log_path)
    probe: dict[int, set[str]] = {}
    for call in read_batch_log(log_path):
        probe.setdefault(int(call["pid"]), set()).update(call["ids"])
    scan = scan_outputs(state.layout)
    all_committed = {i for ids in scan.ids.values() for i in ids}
    # The probe's redone per worker: ids it handed to the model that a later worker handed again.
    order = [ln.worker_pid for ln in launches if ln.worker_pid is not None]
    probe_redone = {}
    for k, pid in enumerate(order):
        later = set().union(*(probe.get(p, set()) for p in order[k + 1:])) if k + 1 < len(order) else set()
        probe_redone[pid] = len(probe.get(pid, set()) & later)
    cross = cross_check_redone(state.layout, probe_redone)
    orphan_gone = all(not _running(ln.worker_pid, ln.worker_ticks) for ln in killed)
    observed = sum(ln.landed for ln in killed) if orphan_gone and rec.attempts and rec.attempts["overlapping"] == 0 else 0
    record(Figures("launcher-SIGKILL", injected=sum(ln.signalled for ln in killed), observed=observed,
                   lost=rec.items_lost, doubled=rec.items_duplicated, redone=rec.max_work_redone or 0,
                   partial_reads=rec.consumer_partial_reads, seconds=round(elapsed, 2),
                   detail={"points": [ln.point for ln in killed], "stale_workers_stopped": stale_stops,
                           "orphan_exit_s": [ln.orphan_gone_s for ln in killed if ln.orphan_gone_s is not None],
                           "attempts": rec.attempts, "work_redone": rec.work_redone,
                           "work_redone_probe": rec.work_redone_probe, "batch": BATCH}))

    print(f"\nlauncher kills: {[(ln.point, ln.returncode, ln.orphan_gone_s) for ln in launches]}; stale workers "
          f"stopped by a retry: {stale_stops}; attempts {rec.attempts}; redone {rec.work_redone} "
          f"(probe {rec.work_redone_probe}); records vs probe {cross}")
    assert final.returncode == 0, logs[-1][-3000:]
    injected = sum(ln.signalled for ln in killed)
    assert injected == sum(ln.landed for ln in killed) == faults_repeat > 0, \
        f"launchers killed mid-shard: {[(ln.point, ln.signalled, ln.returncode) for ln in killed]}, wanted {faults_repeat}"
    # The task's return value is the shard manifest's summary; the last worker wrote that manifest after
    # resuming what the killed ones committed, skipping exactly the ids the probe did not see it generate.
    result = json.loads(logs[-1].strip().splitlines()[-1])
    manifest = json.loads(Path(state.layout.shard_manifest(0)).read_text())
    assert [result[k] for k in ("shard", "generated", "errored")] == [manifest[k] for k in ("shard", "generated", "errored")]
    assert result["generated"] + result["errored"] == N_ITEMS, result
    assert final.worker_pid is not None
    assert 0 < manifest["resumed_items"] == N_ITEMS - len(probe.get(final.worker_pid, set())), manifest
    # Every launch was seen starting its worker (else the orphan checks below would skip it).
    assert all(ln.worker_pid is not None for ln in launches), [(ln.point, ln.worker_pid) for ln in launches]
    assert left_running == [], f"worker processes still running: {left_running}"
    waited = [ln.orphan_gone_s for ln in killed if ln.orphan_gone_s is not None]
    assert waited, "no repeat waited for its orphan to exit by itself"
    assert all(gone_s < ORPHAN_EXIT_S for gone_s in waited), waited
    assert set().union(*probe.values()) == all_committed, "the probe missed a worker's model calls"
    assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
    assert rec.generated + rec.errored == N_ITEMS == len(all_committed)
    assert rec.attempts is not None and rec.attempts["overlapping"] == 0, rec.attempts
    # An orphan commits its batch and stops (sigterm), or dies before its SIGTERM handler is set
    # (unknown); it never fails (a broken log pipe once made it exit with an error mid-commit).
    assert [r.state for r in records][-1:] == ["done"]
    assert len(records[:-1]) >= sum(ln.point == "parts" for ln in killed), [r.pid for r in records]
    assert all(r.state in ("sigterm", "unknown") for r in records[:-1]), [(r.state, r.error) for r in records]
    assert (rec.max_work_redone or 0) <= BATCH and (rec.work_redone or 0) <= BATCH * injected
    assert not cross["mismatched"], cross
    assert observed == injected
