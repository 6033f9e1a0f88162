"""Two workers on the same shard at once (a duplicate pod, a retry that overlaps a slow attempt).

1. Real: two subprocesses of the real worker CLI (through the harness probe that logs every model
   call with its start time) on one shard of the real tiny text model, held at a gate before their
   first model call and let go a random 0-0.2 s apart, so they generate at the same time. The test
   proves they did (their generation windows in the probe log overlap, and so do the worker's own
   attempt records), then: create-only parts make the first writer of each part name win; the other
   fails loudly (ObjectConflictError, exit 2) or finds the shard done. After both exit (and one
   rerun if neither committed) every id is in the outputs exactly once. The second worker is the
   injected fault: with injection off only one starts, nothing overlaps and the test fails.

2. A deterministic race (threads, stepped): the loser of part K had failed items. The part file is
   the batch's commit point and is written before its errors part, so the loser's conflict comes
   before it can commit its errors, and no id ends twice in ``errors/shard-K.jsonl`` (this once
   doubled; the test keeps it fixed). With injection off the second worker never starts: no race.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import ObjectConflictError
from genbatch.run.reconcile import reconcile, work_redone
from models.registry import resolve
from models.worker import run_shard
from tests.faults._support import EchoRunner, Figures, record
from tests.helpers import prepared_run
from tests.injection import injection_enabled
from tests.worker_harness import (
    BATCH_LOG_ENV,
    GATE_ENV,
    catalog_prompts,
    probed_worker_cmd,
    read_batch_log,
    real_run,
    worker_env,
    write_items,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS, BATCH, NEW_TOKENS = 400, 8, 16  # ~2 s of generation each: both workers overlap after loading
TIMEOUT_S = 180


def _windows(calls: list[dict[str, Any]], ended: dict[int, float]) -> dict[int, tuple[float, float]]:
    """Each worker's generation window, by pid: from its first model call's start to its process's exit.

    The probe logs when each call starts; a loser that conflicts after its first batch has one call,
    so the window runs on to its exit (which comes after its failed commit)."""
    starts: dict[int, float] = {}
    for call in calls:
        starts[call["pid"]] = min(starts.get(call["pid"], call["t"]), call["t"])
    return {pid: (start, ended[pid]) for pid, start in starts.items() if pid in ended}


def _relative(windows: dict[int, tuple[float, float]]) -> dict[str, list[float]]:
    """The windows in seconds from the earliest model call (for the report)."""
    base = min((w[0] for w in windows.values()), default=0.0)
    return {str(pid): [round(w[0] - base, 3), round(w[1] - base, 3)] for pid, w in windows.items()}


def _wait_ready(gates: list[Path], procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not all(Path(f"{g}.ready").exists() for g in gates):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise AssertionError(f"a worker never reached its first model call: {[p.poll() for p in procs]}")
        time.sleep(0.005)


def test_two_workers_racing_on_one_shard_output_exactly_once(tmp_path: Path, zoo_registry: str,
                                                               faults_repeat: int, faults_seed: int) -> None:
    rng = random.Random(faults_seed + 2)
    mv = resolve(zoo_registry, "catalog-copy", alias="production")
    prompts = catalog_prompts()
    for rep in range(faults_repeat):
        case = tmp_path / f"race-{rep}"
        state = real_run(str(case / "out"), mv, zoo_registry, run_id="race",
                         generation={"batch_size": BATCH, "max_new_tokens": NEW_TOKENS})
        write_items(state, [{"id": f"item-{i:04d}", "prompt": prompts[i % len(prompts)], "seed": i, "params": {},
                             "row_index": i} for i in range(N_ITEMS)])
        log = case / "batches.log"
        n_workers = 2 if injection_enabled() else 1  # the second worker is the fault
        gates = [case / f"gate-{k}" for k in range(n_workers)]
        offset = rng.uniform(0.0, 0.2)
        t0 = time.monotonic()
        errs = [case / f"worker-{k}.err" for k in range(n_workers)]
        procs = [subprocess.Popen(probed_worker_cmd(state.layout.root),
                                  env={**worker_env(), BATCH_LOG_ENV: str(log), GATE_ENV: str(gate)},
                                  stdout=subprocess.DEVNULL, stderr=err.open("w"), text=True)
                 for gate, err in zip(gates, errs, strict=True)]
        ended: dict[int, float] = {}  # pid -> wall time its exit was seen (the probe's clock)
        try:
            _wait_ready(gates, procs)  # both loaded the model and listed the outputs: let them go
            for k, gate in enumerate(gates):
                if k:
                    time.sleep(offset)
                Path(f"{gate}.go").touch()
            deadline = time.monotonic() + TIMEOUT_S
            while len(ended) < len(procs) and time.monotonic() < deadline:
                ended.update({p.pid: time.time() for p in procs if p.pid not in ended and p.poll() is not None})
                time.sleep(0.005)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
        results = [(proc.pid, proc.returncode, err.read_text()) for proc, err in zip(procs, errs, strict=True)]
        windows = _windows(read_batch_log(log), ended)
        # The race happened: each worker began generating before the other one had exited.
        overlapped = len(windows) == 2 and max(w[0] for w in windows.values()) <= min(w[1] for w in windows.values())
        conflicts = [err for _pid, rc, err in results if rc == 2 and "already exists with different content" in err]
        rerun = None
        if not Path(state.layout.shard_manifest(0)).exists():  # neither committed: the orchestrator retries
            rerun = subprocess.run(probed_worker_cmd(state.layout.root), env={**worker_env(), BATCH_LOG_ENV: str(log)},
                                   capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        rec = reconcile(state.layout.root, attempt_log=log)
        records_overlap = (rec.attempts or {}).get("overlapping", 0)
        record(Figures("worker-race", injected=n_workers - 1, observed=int(overlapped and records_overlap > 0),
                       lost=rec.items_lost, doubled=rec.items_duplicated, redone=rec.max_work_redone or 0,
                       seconds=round(time.monotonic() - t0, 2),
                       detail={"exit_codes": [rc for _p, rc, _e in results], "release_gap_s": round(offset, 3),
                               "windows_s": _relative(windows),
                               "attempts_overlapping": records_overlap, "conflict_exits": len(conflicts),
                               "rerun": None if rerun is None else rerun.returncode,
                               "work_redone": rec.work_redone}))
        assert overlapped, f"repeat {rep}: the workers' generation windows did not overlap: {windows}"
        assert records_overlap >= 1, f"repeat {rep}: the attempt records show no overlap: {rec.attempts}"
        for _pid, rc, err in results:
            assert rc == 0 or (rc == 2 and "already exists with different content" in err), err[-2000:]
            assert "Traceback" not in err, err[-3000:]
        assert any(rc == 0 for _p, rc, _e in results) or (rerun is not None and rerun.returncode == 0)
        assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
        assert rec.generated == N_ITEMS


# --------------------------------------------------------------------------- the doubling repro


class _Stepper:
    """A runs to its 2nd batch; B lists, commits part 1 and waits; A commits (or fails) batch 1; B finishes."""

    def __init__(self) -> None:
        self.a_at_batch_1 = threading.Event()
        self.b_committed_part_1 = threading.Event()
        self.a_done = threading.Event()
        self.a_calls = 0
        self.b_calls = 0

    def before_a(self, items: list[Any]) -> None:
        self.a_calls += 1
        if self.a_calls == 2:
            self.a_at_batch_1.set()
            if not self.b_committed_part_1.wait(60):
                raise RuntimeError("B never committed its part 1")

    def before_b(self, items: list[Any]) -> None:
        self.b_calls += 1
        if self.b_calls == 2:  # B's first batch is committed (as part 1) before its second starts
            self.b_committed_part_1.set()
            if not self.a_done.wait(60):
                raise RuntimeError("A never finished its batch 1")


def _doubling_run(tmp_path: Path, race: bool) -> tuple[Any, BaseException | None]:
    state = prepared_run(str(tmp_path), generation={"batch_size": 4})
    # Positions 0-31: prompts grow with the position, so A's first window (32 items) runs in position
    # order: batch 0 = 0-3, batch 1 = 4-7. Positions 32-35 are the shortest: B, listing after part 0,
    # has them in its first window and runs them first, as its part 1. Item 5 always fails.
    items = [{"id": f"item-{i:04d}", "prompt": "w " * (i + 2), "seed": i, "params": {}, "row_index": i}
             for i in range(32)]
    items += [{"id": f"item-{i:04d}", "prompt": "w", "seed": i, "params": {}, "row_index": i} for i in range(32, 40)]
    write_items(state, items)
    step = _Stepper()
    fail = frozenset({"item-0005"})
    errors: dict[str, BaseException] = {}

    def attempt(name: str, runner: EchoRunner) -> None:
        try:
            run_shard(state.layout.root, 0, runner=runner)
        except BaseException as exc:  # noqa: BLE001 - the loser's conflict is expected and asserted
            errors[name] = exc
        finally:
            if name == "A":
                step.a_done.set()

    if not race:  # no second worker: nothing for A to wait for
        step.b_committed_part_1.set()
    a = threading.Thread(target=attempt, args=("A", EchoRunner(fail_ids=fail, before_batch=step.before_a)))
    a.start()
    assert step.a_at_batch_1.wait(60)
    if race:
        b = threading.Thread(target=attempt, args=("B", EchoRunner(fail_ids=fail, before_batch=step.before_b)))
        b.start()
        b.join(60)
    a.join(60)
    return state, errors.get("A")


def test_racing_workers_with_failed_items_do_not_double_errors(tmp_path: Path) -> None:
    race = injection_enabled()  # the second worker is the fault
    state, a_error = _doubling_run(tmp_path, race)
    lost_race = isinstance(a_error, ObjectConflictError)
    rec = reconcile(state.layout.root)
    record(Figures("worker-race-errors", injected=int(race), observed=int(lost_race),
                   doubled=rec.items_duplicated, detail={"a_ended_with": repr(a_error)[:300], "problems": rec.problems}))
    assert lost_race, f"the workers did not race as designed: A ended with {a_error!r}"
    assert rec.items_duplicated == 0, rec.problems


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_work_redone_counts_what_a_later_attempt_generated_again(tmp_path: Path) -> None:
    log = tmp_path / "attempts.jsonl"
    log.write_text('{"pid": 1, "ids": ["a", "b"]}\n{"pid": 1, "ids": ["c", "d"]}\n'
                   '{"pid": 2, "ids": ["c", "d"]}\n{"pid": 2, "ids": ["e"]}\n{"pid": 3, "ids": ["e"]}\n')
    assert work_redone(log) == (3, 2)
