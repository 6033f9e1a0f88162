"""Disk full while a worker writes outputs: a clear StorageError, and a rerun completes exactly once.

The run dir lives on a size-limited tmpfs (``mount -t tmpfs -o size=...``; needs root or
CAP_SYS_ADMIN), sized so the space runs out after a random number of committed parts. The
worker (in-process ``run_shard``) must fail with StorageError naming the object and "No space
left on device", leave no partial object visible, and, once the filesystem is grown, a rerun must
finish the shard with nothing lost, nothing doubled and at most the failed batch redone.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from genbatch.errors import StorageError
from genbatch.run.reconcile import reconcile
from models.worker import run_shard
from tests.faults._support import EchoRunner, Figures, record
from tests.helpers import prepared_run
from tests.worker_harness import hidden_temp_files, write_items

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = 4096
N_ITEMS, BATCH = 120, 6  # 20 parts of about one page each


def _mount(path: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes; returns why not, or None on success."""
    if not shutil.which("mount"):
        return "no mount command"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


def _remount(path: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@contextlib.contextmanager
def _tmpfs(path: Path, size: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    why = _mount(path, size)
    if why is not None:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({why}); the disk-full class needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _items() -> list[dict[str, object]]:
    # ~650 bytes a record: a part of 6 records fills about one tmpfs page.
    return [{"id": f"item-{i:04d}", "prompt": f"colour: red | item: scarf {i} " + "wool " * 20, "seed": i, "params": {},
             "row_index": i} for i in range(N_ITEMS)]


def test_disk_full_fails_clearly_and_a_rerun_completes_exactly_once(tmp_path: Path, faults_repeat: int,
                                                                       faults_seed: int) -> None:
    rng = random.Random(faults_seed + 99)
    for rep in range(faults_repeat):
        mnt = tmp_path / f"disk-{rep}"
        with _tmpfs(mnt, 64 * PAGE) as disk:
            state = prepared_run(str(disk / "out"), generation={"batch_size": BATCH})
            write_items(state, _items())
            headroom = rng.randint(3, 14)  # parts (about a page each) that fit before the disk is full
            _remount(disk, _used(disk) + headroom * PAGE)
            runner = EchoRunner()
            t0 = time.monotonic()
            with pytest.raises(StorageError) as info:
                run_shard(state.layout.root, 0, runner=runner)
            message = str(info.value)
            first_calls = [list(c) for c in runner.calls]
            visible_partial = hidden_temp_files(state.layout)
            _remount(disk, 16 * 1024 * 1024)
            runner.calls.clear()
            run_shard(state.layout.root, 0, runner=runner)
            rec = reconcile(state.layout.root)
            # Work redone: ids the failed attempt generated that the rerun generated again.
            first_ids = {i for c in first_calls for i in c}
            redone = len(first_ids & {i for c in runner.calls for i in c})
            record(Figures("disk-full", injected=1, observed=int("No space left on device" in message),
                           lost=rec.items_lost, doubled=rec.items_duplicated, redone=redone,
                           seconds=round(time.monotonic() - t0, 2),
                           detail={"headroom_pages": headroom, "message": message[:200],
                                   "batches_before_full": len(first_calls)}))
            assert "No space left on device" in message and state.layout.root in message, message
            assert visible_partial == [], f"temp files left behind: {visible_partial}"
            assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
            assert rec.generated == N_ITEMS
            assert redone <= BATCH, f"the rerun redid {redone} items, more than the one batch in flight"
            # The worker's attempt records say the same (the failed attempt's batch in flight).
            assert rec.work_redone == redone, (rec.work_redone, redone, rec.attempts)
