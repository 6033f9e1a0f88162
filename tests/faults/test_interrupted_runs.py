"""A run interrupted at any point and resumed publishes outputs identical to an uninterrupted run.

The whole run goes through the real stages in-process with the real tiny text model (and, once
per repeat set, the tiny image model): validate → Beam preprocess → generate each shard → quality
gate → publish. An interruption is a crash (a BaseException, nothing can swallow it) at a random
one of the run's storage writes, copies or deletes (every write path of ``genbatch.io.storage``, the
Beam job's shard-file uploads included), before it or right after it landed, in any stage. The run
resumes as Airflow does (the interrupted task again, then every later one); a second crash may hit
the resumed part. Every planned crash must fire; then the published records (minus ``timings``),
errors, rejects and images must equal, byte for byte, those of the run done without interruption,
``reconcile`` must show nothing lost, doubled or orphaned, and a read before ``_SUCCESS`` sees nothing.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.outputs import RunNotPublishedError, read
from genbatch.run.reconcile import reconcile
from genbatch.run.state import load_run_state
from tests.faults._support import (
    Figures,
    catalog_rows,
    image_bytes,
    published_records,
    record,
    text_spec,
    write_input,
)
from tests.injection import injection_enabled

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Crash(BaseException):
    """Stands in for the process dying at this point."""


STAGES = ("validate", "preprocess", "shard-0", "shard-1", "quality", "publish")


def _stage_fns(run_dir: str, runners: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    from beam_jobs.preprocess import run as preprocess
    from genbatch.stages.publish import publish
    from genbatch.stages.quality import quality_gate
    from genbatch.stages.validate import validate_input
    from models.worker import run_shard

    return {
        "validate": lambda: validate_input(run_dir),
        "preprocess": lambda: preprocess(["--run-dir", run_dir]),
        "shard-0": lambda: run_shard(run_dir, 0, runner=runners["main"]),
        "shard-1": lambda: run_shard(run_dir, 1, runner=runners["main"]),
        "quality": lambda: quality_gate(run_dir),
        "publish": lambda: publish(run_dir),
    }


WRITE_FNS = ("write", "upload_file", "delete", "remove_empty_dirs", "remove_stale_temp_files",
             "compare_and_swap_json")
"""The local backend's methods that change storage: every facade write reaches one of these."""


class WriteCounter:
    """Counts every storage write, copy and delete; crashes at the chosen ones (before or after it).

    It wraps the local backend's writing methods (what ``write_bytes``/``write_json``/``write_text``,
    ``upload_file``, ``delete``, ``remove_empty_dirs``, ``remove_stale_temp_files`` and
    ``compare_and_swap_json`` all end in) and the facade's ``download_file`` (no backend method
    writes its local file): a stage or a Beam DoFn in this process cannot write around it.
    With injection off it counts and never crashes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # image writes run on a small thread pool
        self.count = 0
        self.crash_at: dict[int, str] = {}
        self.crashed: list[tuple[int, str, str]] = []
        self.stage = ""
        self.site_of: dict[int, tuple[str, str]] = {}  # write number -> (stage, function) that made it

    def _wrap(self, fn_name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = str(args[1] if fn_name in ("upload_file", "download_file") else args[0])
            with self._lock:
                self.count += 1
                n = self.count
                self.site_of[n] = (self.stage, fn_name)
                when = self.crash_at.pop(n, None) if injection_enabled() else None
            if when == "before":
                self.crashed.append((n, when, target))
                raise Crash(f"{fn_name} #{n} ({target}) never happened")
            result = real(*args, **kwargs)
            if when == "after":
                self.crashed.append((n, when, target))
                raise Crash(f"died right after {fn_name} #{n} ({target}) landed")
            return result

        return wrapper

    @contextlib.contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[WriteCounter]:
        backend = storage.backend_for("/")
        with monkeypatch.context() as mp:
            for name in WRITE_FNS:
                mp.setattr(backend, name, self._wrap(name, getattr(backend, name)))
            mp.setattr(storage, "download_file", self._wrap("download_file", storage.download_file))
            yield self


def _run_all(run_dir: str, runners: dict[str, Any], counter: WriteCounter, consumer_checks: list[int]) -> int:
    """Run every stage, resuming after each crash from the stage it hit; returns the crashes survived."""
    fns = _stage_fns(run_dir, runners)
    crashes = 0
    stage = 0
    while stage < len(STAGES):
        try:
            counter.stage = STAGES[stage]
            fns[STAGES[stage]]()
            stage += 1
        except Crash:
            crashes += 1
            if crashes > 5:
                raise
        if not storage.exists(RunLayout(run_dir).success):  # a consumer reading now must get nothing
            seen = 0
            with contextlib.suppress(RunNotPublishedError):
                for _rec in read(run_dir, wait_s=0):
                    seen += 1
            consumer_checks.append(seen)
    return crashes


def _snapshot(run_dir: str) -> dict[str, Any]:
    layout = RunLayout(run_dir)
    state = load_run_state(run_dir)
    errors = b"".join(storage.read_bytes(layout.errors_file(s)) for s in range(state.num_shards))
    # A reject names its row's file (source.file): the clean run read the same rows from another folder.
    here = state.spec.input.uri.encode()
    rejects = {u[len(layout.root):]: storage.read_bytes(u).replace(here, b"<input>")
               for u in storage.list_uris(layout.rejects_dir)}
    return {"records": published_records(run_dir), "errors": errors, "rejects": rejects, "images": image_bytes(run_dir)}


def _real_runner(run_dir: str, cache: Path) -> Any:
    """The runner the worker would load for this run (real model, verified files), loaded once."""
    import torch

    from models.registry import fetch_verified
    from models.runners import load_runner

    torch.set_num_threads(1)
    state = load_run_state(run_dir)
    model_dir = fetch_verified(state.model, cache)
    return load_runner(state.spec.task, model_dir, generation=state.spec.generation.model_dump(),
                       precision=state.spec.model.precision, device="cpu")


def _spec(tmp: Path, registry: str, task: str) -> dict[str, Any]:
    if task == "text":
        inp = write_input(tmp / "input.jsonl", catalog_rows(14) + [{"id": "bad/id", "prompt": "x"}])
        return text_spec(inp, str(tmp / "runs"), registry, run_id="run", num_shards=2, batch_size=4, max_new_tokens=8)
    rows = [{"id": f"img-{i}", "prompt": f"a {c} square"} for i, c in enumerate(["red", "blue", "green", "tiny", "big"])]
    inp = write_input(tmp / "input.jsonl", [*rows, {"id": "bad/id", "prompt": "x"}])
    return text_spec(inp, str(tmp / "runs"), registry, run_id="run", num_shards=2, batch_size=2, task="image",
                     model={"name": "tiny-image"},
                     generation={"num_inference_steps": 2, "height": 32, "width": 32})


@pytest.mark.parametrize("task", ["text", "image"])
def test_interrupted_anywhere_and_resumed_publishes_what_a_clean_run_publishes(
        task: str, tmp_path: Path, zoo_registry: str, faults_repeat: int, faults_seed: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from genbatch.stages.prepare import prepare_run
    from models.registry import resolve_for_spec

    rng = random.Random(faults_seed + (5 if task == "text" else 6))
    clean_dir = prepare_run(_spec(tmp_path / "clean", zoo_registry, task), "run", resolve_model=resolve_for_spec)
    runners = {"main": _real_runner(clean_dir, tmp_path / "model-cache")}
    counter = WriteCounter()
    with counter.installed(monkeypatch):
        _run_all(clean_dir, runners, counter, [])
    total_writes, sites = counter.count, dict(counter.site_of)
    candidates = Counter(f"{st}:{fn}" for st, fn in sites.values())
    # The Beam job's shard files are uploads (beam_jobs/sorted_files.merge_runs) made inside a DoFn:
    # they must be crash points like every other write.
    assert candidates["preprocess:upload_file"] > 0, candidates
    clean = _snapshot(clean_dir)
    assert len(clean["records"]) == (14 if task == "text" else 5) and reconcile(clean_dir).ok
    if task == "image":
        assert len(clean["images"]) == 5

    hit: Counter[str] = Counter()
    for rep in range(faults_repeat):
        run_dir = prepare_run(_spec(tmp_path / f"rep-{rep}", zoo_registry, task), "run", resolve_model=resolve_for_spec)
        # Repeat r interrupts stage r (mod 6) first, in a random one of the functions that stage writes
        # with (the first time it is preprocess: upload_file), at a random one of those writes.
        target = STAGES[(rep + (0 if task == "text" else 3)) % len(STAGES)]
        fns = sorted({fn for st, fn in sites.values() if st == target})
        fn = "upload_file" if target == "preprocess" and not hit["preprocess:upload_file"] else rng.choice(fns)
        first = rng.choice([n for n, site in sites.items() if site == (target, fn)])
        counter = WriteCounter()
        counter.crash_at[first] = rng.choice(["before", "after"])
        # A second interruption, during the resumed part: only within the writes of the stages after
        # the first one's, which run in full at least once after it, so it is certain to be reached.
        later = sum(1 for st, _fn in sites.values() if STAGES.index(st) > STAGES.index(target))
        if later and rng.random() < 0.5:
            counter.crash_at[first + rng.randint(1, min(6, later))] = rng.choice(["before", "after"])
        planned = len(counter.crash_at)
        consumer_checks: list[int] = []
        t0 = time.monotonic()
        with counter.installed(monkeypatch):
            crashes = _run_all(run_dir, runners, counter, consumer_checks)
        hit.update(f"{counter.site_of[n][0]}:{counter.site_of[n][1]}" for n, _when, _uri in counter.crashed)
        rec = reconcile(run_dir)
        got = _snapshot(run_dir)
        partial = sum(1 for seen in consumer_checks if seen)
        record(Figures(f"interrupted-run-{task}", injected=len(counter.crashed), observed=crashes, lost=rec.items_lost,
                       doubled=rec.items_duplicated, partial_reads=partial + rec.consumer_partial_reads,
                       seconds=round(time.monotonic() - t0, 2),
                       detail={"crashes": [f"#{n} {when} {':'.join(counter.site_of[n])} {uri[len(run_dir):]}"
                                           for n, when, uri in counter.crashed],
                               "planned": planned, "first_in": f"{target}:{fn}", "writes": total_writes,
                               "candidates": dict(sorted(candidates.items()))}))
        assert crashes == len(counter.crashed) == planned > 0, (
            f"repeat {rep}: planned {planned} crashes, raised {len(counter.crashed)}, survived {crashes}; "
            f"never reached: {counter.crash_at}")
        assert rec.ok and rec.orphans == [], rec.problems
        assert partial == 0 and rec.consumer_partial_reads == 0
        differing = [i for i in clean["records"] if got["records"].get(i) != clean["records"][i]]
        assert not differing and set(got["records"]) == set(clean["records"]), \
            f"repeat {rep} ({counter.crashed}): records differ from the clean run: {differing[:3]}"
        assert got["errors"] == clean["errors"] and got["rejects"] == clean["rejects"]
        assert got["images"] == clean["images"], f"repeat {rep} ({counter.crashed}): images differ"
    print(f"\ncrash points hit ({task}): {dict(sorted(hit.items()))}; candidates {dict(sorted(candidates.items()))}")
    if any(STAGES[(rep + (0 if task == "text" else 3)) % len(STAGES)] == "preprocess" for rep in range(faults_repeat)):
        assert hit["preprocess:upload_file"] > 0, hit  # the Beam job's uploads are reachable crash points
