"""Kill-and-resume of a REAL worker subprocess on the real tiny text model (issue 3 item 4).

The worker (the real CLI, ``genbatch.cli.commands.main`` -> ``models.worker.main``) runs the shipped
``catalog-copy`` model on 400 catalog prompts in batches of 8. It is killed mid-shard at
random points (SIGKILL 20 times, SIGTERM 6 times), restarted after every kill, then left
to finish. After that:

* exactly once: every id appears exactly once across ``part-*.jsonl`` + the errors file,
  checked directly and with the project's own ``genbatch.run.reconcile.reconcile`` (0 lost,
  0 doubled);
* no partial files: every file ``storage.list_uris`` shows in the outputs dir is a complete,
  parseable JSONL part (or the manifest); temp files a killed write left behind are hidden
  from listings (their count is printed, not asserted: nothing reclaims them yet);
* work redone <= 1 batch per kill, measured (not inferred): the worker is started through
  ``python -m tests.worker_harness``, which is the real CLI plus a passive probe that appends
  the ids of every ``run_batch`` call to a log with one O_APPEND write (whole or absent after
  SIGKILL). For each killed attempt, redone = ids it handed to the model minus ids it
  committed (parts it created); those are exactly the items a later attempt generates again.
  The probe also proves the skip: no attempt hands an already committed id to the model, and
  the total generated across attempts minus the item count equals the sum of the per-kill
  figures. The worker's own per-attempt records (``models/attempts.py``) must tell the same
  story, attempt by attempt (``tests.worker_harness.cross_check_redone``), and end in the
  state the signal implies (SIGKILL: no end record, ``unknown``; SIGTERM: ``sigterm``);
* faults injected = faults observed: a kill counts only if the process was still running
  when the signal was sent, died of it, and the shard manifest did not exist afterwards (the
  kill landed mid-shard). Every injected kill must be observed, and all of them must land.

A kill point is random (seeded): after the attempt's committed part count grows by a random
1-2 parts, plus a random 0-12 ms (a batch of 8 takes ~10 ms here), so the signal falls inside
model calls, JSON encoding, temp-file writes, fsyncs and links alike; two of the SIGTERMs fall
a random 0.2-2.5 s after start instead (imports, model load, resume scan). Redone work per
kill is therefore 0 (killed between a commit and the next model call, or before any) or 8.

Cost: ~27 worker starts at ~3-4 s CPU each (torch/transformers import + model load dominate;
generating the 400 items takes ~0.5 s): ~100 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from genbatch.run.reconcile import reconcile
from genbatch.run.state import RunState
from models.registry import resolve
from models.zoo.seed import ensure_zoo_registered
from tests.injection import injection_enabled
from tests.worker_harness import (
    BATCH_LOG_ENV,
    attempt_records,
    catalog_prompts,
    cross_check_redone,
    hidden_temp_files,
    probed_worker_cmd,
    read_batch_log,
    real_run,
    run_to_completion,
    scan_outputs,
    worker_cmd,
    worker_env,
    write_items,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS = 400  # 50 batches of 8: room for 20 kills of 1-2 parts each plus overshoot on a loaded machine
BATCH = 8
ATTEMPT_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    ensure_zoo_registered(root)
    return root


def _run(tmp_path: Path, registry: str, run_id: str) -> RunState:
    mv = resolve(registry, "catalog-copy", alias="production")
    state = real_run(str(tmp_path / "out"), mv, registry, run_id=run_id,
                     generation={"batch_size": BATCH, "max_new_tokens": 8})
    prompts = catalog_prompts()
    write_items(state, [{"id": f"item-{i:04d}", "prompt": prompts[i % len(prompts)], "seed": i, "params": {},
                         "row_index": i} for i in range(N_ITEMS)])
    return state


@dataclass
class Attempt:
    pid: int
    signalled: bool
    returncode: int
    landed: bool
    started: set[str] = field(default_factory=set)
    committed: set[str] = field(default_factory=set)
    skipped_violation: set[str] = field(default_factory=set)
    parts: list[tuple[int, int]] = field(default_factory=list)  # (rank, part) of the parts it created

    @property
    def redone(self) -> int:
        return len(self.started - self.committed)


def _committed_count(outputs_dir: Path) -> int:
    try:
        names = os.listdir(outputs_dir)
    except FileNotFoundError:
        return 0
    return sum(1 for n in names if n.startswith(("part-", "errors-")) and n.endswith(".jsonl"))


def _parts_and_ids(state: RunState) -> dict[tuple[str, int, int], list[str]]:
    return scan_outputs(state.layout).ids


def _attempt(state: RunState, tmp_path: Path, sig: int | None, rng: random.Random, n: int,
             point: str = "parts") -> Attempt:
    """One worker start; with ``sig`` it is signalled at a random point, else left to finish.

    With injection off (``tests.injection``) no signal is sent: the kill counts then stay at 0 and
    ``_check`` fails.

    ``point="parts"``: once this attempt has committed a random 1-2 parts, plus 0-12 ms.
    ``point="startup"``: a random 0.2-2.5 s after the start (imports, model load, resume scan), or as this
    attempt starts its first batch if that comes sooner (a native-runner worker starts in about 1 s).
    """
    outputs_dir = Path(state.layout.outputs_dir(0))
    log_path = tmp_path / "batches.log"
    before = _parts_and_ids(state)
    done_before = {i for ids in before.values() for i in ids}
    env = {**worker_env(), BATCH_LOG_ENV: str(log_path)}
    with (tmp_path / f"attempt-{n:02d}.log").open("w") as logf:
        proc = subprocess.Popen(probed_worker_cmd(state.layout.root), env=env, stdout=logf, stderr=subprocess.STDOUT)
        signalled = False
        try:
            if sig is not None and point == "startup":
                deadline = time.monotonic() + rng.uniform(0.2, 2.5)
                while (proc.poll() is None and time.monotonic() < deadline
                       and not any(rec["pid"] == proc.pid for rec in read_batch_log(log_path))):
                    time.sleep(0.002)
                if proc.poll() is None and injection_enabled():
                    os.kill(proc.pid, sig)
                    signalled = True
            elif sig is not None:
                target = len(before) + rng.randint(1, 2)
                extra = rng.uniform(0.0, 0.012)
                deadline = time.monotonic() + ATTEMPT_TIMEOUT_S
                while proc.poll() is None and _committed_count(outputs_dir) < target and time.monotonic() < deadline:
                    time.sleep(0.001)
                if proc.poll() is None:
                    time.sleep(extra)
                if proc.poll() is None and injection_enabled():
                    os.kill(proc.pid, sig)
                    signalled = True
            rc = proc.wait(timeout=ATTEMPT_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    after = _parts_and_ids(state)
    new = sorted(k for k in after if k not in before)
    manifest_exists = Path(state.layout.shard_manifest(0)).exists()
    att = Attempt(pid=proc.pid, signalled=signalled, returncode=rc,
                  landed=signalled and rc != 0 and not manifest_exists,
                  parts=[k[1:] for k in new if k[0] == "part"])
    att.committed = {i for k in new for i in after[k]}
    for rec in read_batch_log(log_path):
        if rec["pid"] == proc.pid:
            att.started.update(rec["ids"])
    att.skipped_violation = att.started & done_before
    if sig is None:
        assert rc == 0, (tmp_path / f"attempt-{n:02d}.log").read_text()[-3000:]
    return att


def _kill_and_resume(state: RunState, tmp_path: Path, sig: int, points: list[str], seed: int) -> list[Attempt]:
    rng = random.Random(seed)
    attempts = []
    for n, point in enumerate(points):
        att = _attempt(state, tmp_path, sig, rng, n, point)
        attempts.append(att)
        if not att.landed:
            break  # the shard finished before the kill: stop and let the assertions say so
    attempts.append(_attempt(state, tmp_path, None, rng, len(attempts)))
    return attempts


def _check(state: RunState, tmp_path: Path, attempts: list[Attempt], sig: int, kills: int) -> dict[str, Any]:
    killed, final = attempts[:-1], attempts[-1]
    name = signal.Signals(sig).name
    print(f"\n{name}: kill  pid      rc   parts-committed  items-committed  items-started  redone")
    for n, a in enumerate(attempts):
        label = f"{n:>4}" if a.signalled else "final"
        print(f"{label:>9}  {a.pid:<7} {a.returncode:>4}   {len(a.parts):>15}  {len(a.committed):>15}  "
              f"{len(a.started):>13}  {a.redone:>6}")

    # Faults injected = faults observed, and all of them landed mid-shard.
    injected = sum(a.signalled for a in killed)
    observed = sum(a.landed for a in killed)
    assert kills > 0 and injected == observed == kills, (
        f"{name}: injected {injected}, observed mid-shard {observed}, wanted {kills}: "
        "the shard finished before every kill landed, or none was sent (injection off); see the table above"
    )
    if sig == signal.SIGKILL:
        assert all(a.returncode == -signal.SIGKILL for a in killed)

    # Exactly once, directly ...
    scan = scan_outputs(state.layout)
    assert scan.unparsable == [] and scan.unexpected == [], (scan.unparsable, scan.unexpected)
    counts = scan.id_counts
    errors_file = Path(state.layout.errors_file(0))
    err_ids = [json.loads(x)["id"] for x in errors_file.read_text().splitlines() if x.strip()]
    out_ids = scan.output_ids
    expected = {f"item-{i:04d}" for i in range(N_ITEMS)}
    final_ids = out_ids + err_ids
    lost = expected - set(final_ids)
    doubled = [i for i, c in counts.items() if c > 1] + sorted({i for i in final_ids if final_ids.count(i) > 1})
    assert not lost and not doubled, f"lost {sorted(lost)[:5]} ({len(lost)}), doubled {doubled[:5]} ({len(doubled)})"
    assert len(final_ids) == N_ITEMS
    # ... and with the project's reconcile().
    rec = reconcile(state.layout.root)
    assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
    assert rec.generated + rec.errored == N_ITEMS

    # The shard manifest tells the same story.
    manifest = json.loads(Path(state.layout.shard_manifest(0)).read_text())
    assert manifest["generated"] + manifest["errored"] == N_ITEMS
    assert manifest["resumed_items"] == N_ITEMS - len(final.started), manifest
    assert sum(p["records"] for p in manifest["parts"]) == len(out_ids)

    # Part numbers only grow across attempts (a restart never rewrites an earlier name).
    numbers = [p for a in attempts for p in a.parts]
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers))

    # Resume skips committed ids; work redone per kill <= one batch, and it adds up.
    assert all(not a.skipped_violation for a in attempts), [sorted(a.skipped_violation)[:5] for a in attempts]
    assert all(a.committed <= a.started for a in attempts), "an attempt committed ids it never generated"
    redone = [a.redone for a in killed]
    total_started = sum(len(a.started) for a in attempts)
    print(f"{name}: redone per kill {redone}; total {sum(redone)} items over {kills} kills "
          f"(<= {BATCH} each); generated {total_started} for {N_ITEMS} items; "
          f"hidden temp files left by killed writes: {len(hidden_temp_files(state.layout))}")
    assert max(redone) <= BATCH, redone
    assert total_started - N_ITEMS == sum(redone)
    assert final.redone == 0

    # The worker's own attempt records agree with the probe, attempt by attempt.
    cross = cross_check_redone(state.layout, {a.pid: a.redone for a in attempts})
    records = {r.pid: r for r in attempt_records(state.layout)}
    print(f"{name}: attempt records {len(records)} for {len(attempts)} attempts; vs probe {cross}")
    assert not cross["mismatched"], cross
    assert len(records) <= len(attempts) and records[final.pid].state == "done", records.get(final.pid)
    # The shard's time and cost count every attempt, not only the last: the device time of every committed
    # batch (each part's records carry their batch's), and the wall of each earlier worker that left a record.
    timings = manifest["timings"]
    assert timings["compute_s"] == round(sum(p["batch_s"] for p in manifest["parts"]), 3) > \
        timings["compute_s_this_attempt"], timings
    assert timings["earlier_attempts"] == len(records) - 1 > 0, timings
    assert timings["wall_s_all_attempts"] > timings["wall_s"], timings
    killed_state = "unknown" if sig == signal.SIGKILL else "sigterm"
    assert all(records[a.pid].state == killed_state for a in killed if a.pid in records), \
        [(r.pid, r.state) for r in records.values()]
    assert all(r.redone <= BATCH for r in records.values())
    assert rec.work_redone == sum(r.redone for r in records.values()) and (rec.max_work_redone or 0) <= BATCH
    return cross


def _records_by_id(state: RunState) -> dict[str, dict[str, object]]:
    out = {}
    for path in sorted(Path(state.layout.outputs_dir(0)).glob("part-*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            rec.pop("timings")  # wall-clock figures differ run to run; everything else must not
            out[rec["id"]] = rec
    return out


def test_sigkill_20_times_at_random_points_loses_and_doubles_nothing(tmp_path: Path, registry: str) -> None:
    state = _run(tmp_path, registry, "kill-run")
    attempts = _kill_and_resume(state, tmp_path, signal.SIGKILL, ["parts"] * 20, seed=20260101)
    _check(state, tmp_path, attempts, signal.SIGKILL, kills=20)


def test_sigterm_at_random_points_loses_and_doubles_nothing_and_matches_a_clean_run(
        tmp_path: Path, registry: str) -> None:
    """SIGTERM (what Kubernetes and Airflow send first); two kills fall during start-up/model load.

    The resumed shard's records equal, id by id, those of an uninterrupted run of the plain
    ``python -m genbatch worker`` CLI (no probe): kills change nothing in what is committed.
    """
    state = _run(tmp_path / "term", registry, "term-run")
    attempts = _kill_and_resume(state, tmp_path / "term", signal.SIGTERM,
                                ["startup", "parts", "startup", "parts", "parts", "parts"], seed=4242)
    _check(state, tmp_path / "term", attempts, signal.SIGTERM, kills=6)

    clean = _run(tmp_path / "clean", registry, "clean-run")
    proc = run_to_completion(worker_cmd(clean.layout.root), worker_env(), ATTEMPT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed, reference = _records_by_id(state), _records_by_id(clean)
    assert len(reference) == N_ITEMS
    differing = [i for i in reference if resumed.get(i) != reference[i]]
    assert not differing, f"{len(differing)} records differ from a clean run, e.g. {differing[:3]}"
