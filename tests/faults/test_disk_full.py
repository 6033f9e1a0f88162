"""Disk full while a worker writes outputs: a clear StorageError, and a rerun completes exactly once.

No privilege needed: an LD_PRELOAD shim (``tests/faults/enospc.c``, built once per session) gives the
worker process a byte budget for writes under the shard's outputs dir, spent after a random number
of committed parts; past it those writes fail with ENOSPC, as on a full disk. The failing attempt is
the real ``genbatch worker`` command in its own process (``tests/faults/enospc.py``) with the shim
preloaded; it must print one error line naming the object and "No space left on device", leave no
partial object visible, and the shim's log must show the fault fired. A rerun without the shim must
finish the shard with nothing lost, nothing doubled and at most the failed batch redone.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genbatch.io.backend import TMP_RE
from genbatch.run.reconcile import reconcile
from models.worker import run_shard
from tests.faults._support import EchoRunner, Figures, record
from tests.faults.enospc import armed_env, injected_paths
from tests.helpers import prepared_run
from tests.injection import INJECT_ENV
from tests.worker_harness import hidden_temp_files, worker_env, write_items

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS, BATCH = 120, 6  # 20 parts
PART_BYTES = 2048  # less than any part (6 echoed records, ~2.3 kB): 14 parts' worth never holds all 20
ENOSPC = "No space left on device"


def _items() -> list[dict[str, object]]:
    return [{"id": f"item-{i:04d}", "prompt": f"colour: red | item: scarf {i} " + "wool " * 20, "seed": i, "params": {},
             "row_index": i} for i in range(N_ITEMS)]


def _temp_of(path: str) -> str:
    """The object a hidden temp file (``.NAME.tmp-HEX``) was about to become: NAME."""
    match = TMP_RE.match(Path(path).name)
    return match.group(1) if match else f"<not a temp file: {path}>"


def test_disk_full_fails_clearly_and_a_rerun_completes_exactly_once(tmp_path: Path, faults_repeat: int,
                                                                       faults_seed: int, enospc_shim: Path) -> None:
    rng = random.Random(faults_seed + 99)
    for rep in range(faults_repeat):
        state = prepared_run(str(tmp_path / f"disk-{rep}"), generation={"batch_size": BATCH})
        write_items(state, _items())
        outputs = Path(state.layout.outputs_dir(0))
        outputs.mkdir(parents=True, exist_ok=True)
        headroom = rng.randint(3 * PART_BYTES, 14 * PART_BYTES)  # bytes the worker may write there
        log, result = tmp_path / f"enospc-{rep}.log", tmp_path / f"attempt-{rep}.json"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "tests.faults.enospc", state.layout.root, str(result)],
                              env=armed_env(worker_env(), enospc_shim, str(outputs), headroom, log),
                              capture_output=True, text=True, timeout=120, check=False)
        assert result.exists(), f"the worker driver died: rc {proc.returncode}\n{proc.stderr[-3000:]}"
        attempt = json.loads(result.read_text())
        fired = injected_paths(log)
        message = attempt["error"] or ""
        error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("genbatch worker: error:")]
        visible_partial = hidden_temp_files(state.layout)
        runner = EchoRunner()
        run_shard(state.layout.root, 0, runner=runner)
        rec = reconcile(state.layout.root)
        # Work redone: ids the failed attempt generated that the rerun generated again.
        first_ids = {i for c in attempt["calls"] for i in c}
        redone = len(first_ids & {i for c in runner.calls for i in c})
        # Each object whose write the shim failed, in order, and whether the worker reported it: the part
        # in the StorageError (the CLI's error line), the metrics file in the worker's warning.
        objects = [_temp_of(p) for p in dict.fromkeys(fired)]
        reported = [o for o in objects if f"write {state.layout.outputs_dir(0)}/{o} failed: {ENOSPC}" in proc.stderr]
        record(Figures("disk-full", injected=len(objects), observed=len(reported),
                       lost=rec.items_lost, doubled=rec.items_duplicated, redone=redone,
                       seconds=round(time.monotonic() - t0, 2),
                       detail={"headroom_bytes": headroom, "message": message[:200], "failed_writes": len(fired),
                               "objects": objects, "batches_before_full": len(attempt["calls"])}))
        # The worker stops at the first failure, the part in flight; on the way out its best-effort metrics
        # write fails too (logged, never masking the first error). Nothing else is written there.
        assert len(objects) == 2 and re.fullmatch(r"part-r00-\d{5}\.jsonl", objects[0]) \
            and objects[1] == "metrics-r00.prom", (
            f"the ENOSPC shim failed writes to {objects} ({len(fired)} write calls); expected 2 objects: the part "
            f"being written, then metrics-r00.prom ({INJECT_ENV}={os.environ.get(INJECT_ENV, 'unset')}; worker rc "
            f"{proc.returncode}, error {message!r})")
        # Each object's write fails twice: the write, then close() retrying the bytes still buffered.
        assert len(fired) == 2 * len(objects), fired
        assert reported == objects, f"the worker did not report every failed write: {objects} vs {reported}"
        # The failing attempt saw it: StorageError naming the object, as one line from the real CLI.
        assert proc.returncode == 2 and attempt["error_type"] == "StorageError", (proc.returncode, attempt)
        assert message == f"write {state.layout.outputs_dir(0)}/{objects[0]} failed: {ENOSPC}", message
        assert error_lines == [f"genbatch worker: error: {message}"], proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert visible_partial == [], f"temp files left behind: {visible_partial}"
        assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
        assert rec.generated == N_ITEMS
        assert redone <= BATCH, f"the rerun redid {redone} items, more than the one batch in flight"
        # The worker's attempt records say the same (the failed attempt's batch in flight).
        assert rec.work_redone == redone, (rec.work_redone, redone, rec.attempts)
