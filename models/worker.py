"""The shard worker: what one pod (or one local process) runs for one shard.

It reads the run's resolved spec and one shard file, generates in length-bucketed batches
and commits each batch as one create-only part file. A killed worker resumes by skipping
the ids already committed, so it redoes at most the batch that was in flight. With several
devices it runs one process per device, each on an interleaved sub-shard with its own parts.
The shard commits by writing its manifest last. It knows nothing about Airflow.

CLI: ``genbatch worker --run-dir URI --shard K [--devices cuda:0,cuda:1 | cpu,cpu]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from genbatch.errors import GenbatchError, ShardInputError, StorageError
from genbatch.io import storage
from genbatch.ops import logs
from genbatch.run.items import ITEM_FIELDS, canary_arm
from genbatch.run.layout import FANOUT_PART, PART_NAME_RE, RunLayout
from genbatch.run.model_ref import ModelVersion
from genbatch.run.records import jsonl_bytes
from genbatch.run.state import RunRef, RunState, as_run_state
from models.attempts import AttemptRecorder, NoRecord
from models.batching import windows
from models.metrics import WorkerMetrics
from models.progress import Progress
from models.registry import fetch_verified
from models.runners import Item, load_runner

log = logging.getLogger(__name__)

AUTO_BATCH = {"text": (16, 64), "image": (4, 16)}  # (start, cap) per task on one device
IMAGE_WRITERS = 4  # threads encoding and writing a batch's PNGs; the part file still goes last
WINDOW_BATCHES = 8
POS_KEY = "_pos"  # the item's position in the shard file: sorts first, so resume reads it cheaply
_POS_PREFIX = '{"_pos": '
STALE_TEMP_S = 3600.0


class ShardFailed(GenbatchError):
    """Too many items of a shard failed generation; the shard is not committed."""


class WorkerInterrupted(Exception):
    """SIGTERM (pod eviction, preemption, task kill): the batch in flight finished, the rest resumes later."""


class _Stop:
    """Set by SIGTERM; checked between batches so the batch in flight is committed, not lost.

    While an attempt is still starting (resume scan, model load: ``starting``) there is nothing to
    finish, so the signal stops it at once instead of after a model load of minutes.
    """

    requested = False
    starting = False
    on_startup_stop: Callable[[], None] | None = None  # ends the attempt's record

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: Any) -> None:
            cls.requested = True
            if cls.starting:  # no exception here: library imports in flight would turn it into another error
                log.warning("received signal %s during start-up, before generating: stopping now", signum)
                if cls.on_startup_stop is not None:
                    cls.on_startup_stop()
                os._exit(EXIT_INTERRUPTED)
            log.warning("received signal %s: finishing the current batch, then stopping", signum)

        signal.signal(signal.SIGTERM, handler)


STOP = _Stop
EXIT_INTERRUPTED = 143  # 128 + SIGTERM: retryable, like being killed by it


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM (or an injected one in tests) halves the batch instead of failing the shard."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def default_devices() -> list[str]:
    """All visible GPUs, else one CPU process."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


class Positions:
    """A bitmap of committed item positions in the (immutable) shard file: 1M items = 125 kB."""

    def __init__(self) -> None:
        self.bits = bytearray()
        self.count = 0

    def add(self, pos: int) -> None:
        byte, bit = divmod(pos, 8)
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        if not self.bits[byte] >> bit & 1:
            self.bits[byte] |= 1 << bit
            self.count += 1

    def __contains__(self, pos: int) -> bool:
        byte, bit = divmod(pos, 8)
        return byte < len(self.bits) and bool(self.bits[byte] >> bit & 1)

    def __len__(self) -> int:
        return self.count


def read_items(shard_uri: str, done: Positions, rank: int = 0, world: int = 1) -> Iterator[Item]:
    """Stream a shard's items; with ``world`` > 1 keep every world-th item (interleaved sub-shard)."""
    position = -1
    for line_no, line in enumerate(storage.iter_lines(shard_uri), start=1):
        if not line.strip():
            continue
        position += 1
        if position % world != rank or position in done:
            continue
        try:
            rec = json.loads(line)
            rec[POS_KEY] = position
            item = Item(
                id=rec["id"],
                prompt=rec["prompt"],
                seed=int(rec["seed"]),
                params=dict(rec.get("params") or {}),
                negative_prompt=rec.get("negative_prompt"),
                record=rec,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardInputError(
                f"{shard_uri} line {line_no}: not a valid shard item ({exc}); "
                "shards are written by the preprocess stage: rerun it"
            ) from None
        yield item


def _position_of(line: str) -> int:
    """Every committed record starts with ``{"_pos": N`` (sorted keys), so no JSON parse is needed."""
    if not line.startswith(_POS_PREFIX):
        return int(json.loads(line)[POS_KEY])
    end = line.find(",", len(_POS_PREFIX))
    return int(line[len(_POS_PREFIX) : end if end >= 0 else -1])


def committed_parts(layout: RunLayout, shard: int) -> tuple[Positions, dict[int, int]]:
    """Positions already committed by earlier attempts, and the next free part number per rank.

    Memory is one bit per shard item, whatever was committed before.
    """
    done = Positions()
    next_part: dict[int, int] = {}
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        match = PART_NAME_RE.match(uri.rsplit("/", 1)[-1])
        if not match:
            continue
        rank, part = int(match.group(2)), int(match.group(3))
        next_part[rank] = max(next_part.get(rank, 0), part + 1)
        for line in storage.iter_lines(uri):
            if line.strip():
                done.add(_position_of(line))
    return done, next_part


class ShardWorker:
    """Runs one (sub-)shard to completion; ``runner`` is injectable so tests can hand in a fake."""

    def __init__(self, state: RunState, shard: int, runner: Any, *, batch_size: int | str, rank: int = 0,
                 device: str = "cpu", total: int | None = None, candidate_runner: Any = None) -> None:
        self.state = state
        self.layout = state.layout
        self.shard = shard
        self.rank = rank
        self.runner = runner
        # Canary: the candidate arm's runner and model; items are routed by a hash of their id.
        self.runners = {"production": runner, "candidate": candidate_runner}
        self.models = {"production": state.model, "candidate": state.canary_model}
        start, cap = AUTO_BATCH[state.spec.task]
        if not device.startswith("cuda"):
            start = cap  # the ramp exists to find the GPU out-of-memory point; host memory does not need it
        self.auto = batch_size == "auto"
        self.batch_size = start if self.auto else int(batch_size)
        self.cap = cap if self.auto else int(batch_size)
        self.stats: dict[str, Any] = {"batches": 0, "generated": 0, "errored": 0, "oom_halvings": 0, "compute_s": 0.0}
        self.metrics = WorkerMetrics(state.run_id, shard, rank, device)
        unit = "tokens" if state.spec.task == "text" else "images"
        self.progress = Progress(f"run {state.run_id} shard {shard} rank {rank}", total, unit)
        self.attempt: AttemptRecorder | NoRecord = NoRecord()  # run_subshard hands in this attempt's record

    def arm(self, item: Item) -> str:
        if self.state.canary_model is None:
            return "production"
        return canary_arm(item.id, self.state.spec.canary.fraction)

    def _base_record(self, item: Item) -> dict[str, Any]:
        meta = {k: v for k, v in item.record.items() if k not in ITEM_FIELDS and k != POS_KEY}
        arm = self.arm(item)
        model = self.models[arm]
        assert model is not None
        return {
            POS_KEY: item.record[POS_KEY],
            "id": item.id,
            "arm": arm,
            "row_index": item.record.get("row_index"),
            "seed": item.seed,
            "model_version": model.ref,
            "params_hash": self.state.params_hash,
            "metadata": meta,
        }

    def _run_with_oom_backoff(self, batch: list[Item]) -> list[tuple[Item, dict[str, Any] | BaseException]]:
        try:
            t0 = time.perf_counter()
            results = self.runners[self.arm(batch[0])].run_batch(batch)
            elapsed = time.perf_counter() - t0
            self.stats["compute_s"] += elapsed
            return [(it, {**res, "batch_s": elapsed, "batch_size": len(batch)})
                    for it, res in zip(batch, results, strict=True)]
        except Exception as exc:  # noqa: BLE001 - classified below, nothing swallowed
            if is_oom(exc) and len(batch) > 1:
                self.stats["oom_halvings"] += 1
                self.batch_size = max(1, len(batch) // 2)
                self.cap = self.batch_size
                log.warning("shard %s rank %s: out of memory at batch %s, halving to %s",
                            self.shard, self.rank, len(batch), self.batch_size)
                half = len(batch) // 2
                return self._run_with_oom_backoff(batch[:half]) + self._run_with_oom_backoff(batch[half:])
            if len(batch) > 1:
                # Isolate the bad item: run one by one so one poison prompt fails only itself.
                out: list[tuple[Item, dict[str, Any] | BaseException]] = []
                for it in batch:
                    out.extend(self._run_with_oom_backoff([it]))
                return out
            return [(batch[0], exc)]

    def _commit_batch(self, part: int, results: list[tuple[Item, dict[str, Any] | BaseException]]) -> None:
        outputs, errors = [], []
        units = 0
        pending_images = []
        for item, res in results:
            rec = self._base_record(item)
            if isinstance(res, BaseException):
                errors.append({**rec, "error": f"{type(res).__name__}: {res}"[:2000]})
                continue
            timings = {"batch_s": round(res.pop("batch_s"), 6), "batch_size": res.pop("batch_size")}
            image = res.pop("image", None)
            if image is not None:
                uri = self.layout.image_path(self.shard, item.id)
                pending_images.append((uri, image))
                res["image_path"] = uri[len(self.layout.root) :].lstrip("/")
                units += 1
            units += int(res.get("new_tokens", 0))
            outputs.append({**rec, **res, "timings": timings})
        if pending_images:
            # PNG encoding and fsync'ed create-only writes overlap on a small pool; all finish
            # (or raise) before the part file below commits the batch.
            with ThreadPoolExecutor(max_workers=IMAGE_WRITERS) as pool:
                list(pool.map(lambda job: _write_png(*job), pending_images))
        # The part file is the batch's commit point and is written first, even with no outputs: a
        # second worker racing on this shard loses here, before it can commit any of this batch's errors.
        storage.write_bytes(self.layout.output_part(self.shard, part, self.rank), jsonl_bytes(outputs))
        if errors:
            storage.write_bytes(self.layout.error_part(self.shard, part, self.rank), jsonl_bytes(errors))
        self.stats["generated"] += len(outputs)
        self.stats["errored"] += len(errors)
        self.stats["batches"] += 1
        batch_s = max((r["timings"]["batch_s"] for r in outputs), default=0.0)
        self.metrics.observe_batch(len(results), batch_s, len(outputs), len(errors), units)
        self.progress.update(len(results), units)
        log.info("shard %s rank %s: committed part %s (%s generated, %s errored)", self.shard, self.rank, part,
                 len(outputs), len(errors), extra={"part": part, "item_ids": [r["id"] for r in outputs]})
        if errors:
            log.warning("shard %s rank %s: %s items failed generation in part %s; first: %s", self.shard, self.rank,
                        len(errors), part, errors[0]["error"][:200],
                        extra={"part": part, "item_ids": [e["id"] for e in errors]})

    def run(self, items: Iterator[Item], first_part: int) -> None:
        part = first_part
        try:
            self._run_windows(self._chat_rendered(items), part)
        except BaseException:
            try:  # metrics are best effort here: never mask the error that is propagating
                self.metrics.publish(self.layout.worker_metrics(self.shard, self.rank))
            except StorageError as exc:
                log.warning("shard %s rank %s: could not write metrics: %s", self.shard, self.rank, exc)
            raise
        self.metrics.publish(self.layout.worker_metrics(self.shard, self.rank))
        log.info("%s (done)", self.progress.line())

    def _chat_rendered(self, items: Iterator[Item]) -> Iterator[Item]:
        """Chat items (``messages``) get their prompt from their arm's chat template, here at the worker."""
        for it in items:
            messages = it.record.get("messages")
            if messages:
                runner = self.runners[self.arm(it)]
                try:
                    it = dataclasses.replace(it, prompt=runner.chat_prompt(messages))
                except (AttributeError, ValueError) as exc:
                    raise ShardInputError(f"item {it.id!r} is chat input, but the {self.arm(it)} model cannot render "
                                          f"it ({exc}); use a model version with a chat template") from None
            yield it

    def _run_windows(self, items: Iterator[Item], part: int) -> None:
        STOP.starting = False  # from here a SIGTERM lets the batch in flight commit
        def length(it: Item) -> int:
            # The preprocess stage already counted tokens (est_tokens); re-tokenize only without it.
            known = it.record.get("est_tokens")
            return int(known) if isinstance(known, int) else int(self.runner.token_length(it.prompt))

        for window in windows(items, self.cap * WINDOW_BATCHES):
            groups: dict[str, list[Item]] = {}
            for it in window:  # a batch shares one model (arm) and one set of generation params
                groups.setdefault(f"{self.arm(it)}|{json.dumps(it.params, sort_keys=True)}", []).append(it)
            for key in sorted(groups):
                pending = sorted(groups[key], key=length)
                while pending:
                    if STOP.requested:
                        raise WorkerInterrupted(f"shard {self.shard} rank {self.rank}: stopped by signal after "
                                                f"{self.stats['batches']} batches; rerun to resume")
                    batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                    self.attempt.begin(part, len(batch))
                    self._commit_batch(part, self._run_with_oom_backoff(batch))
                    self.attempt.committed(len(batch))
                    part += 1
                    if self.auto and self.batch_size < self.cap:
                        self.batch_size = min(self.cap, self.batch_size * 2)


def _write_png(uri: str, image: Any) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    storage.write_bytes(uri, buf.getvalue(), content_type="image/png")


def merge_errors(layout: RunLayout, shard: int) -> list[dict[str, Any]]:
    """Fold the per-batch error parts into errors/shard-K.jsonl (deterministic, so idempotent)."""
    records: list[dict[str, Any]] = []
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        if uri.rsplit("/", 1)[-1].startswith("errors-"):
            records.extend(json.loads(line) for line in storage.iter_lines(uri) if line.strip())
    records.sort(key=lambda r: r["id"])
    storage.write_bytes(layout.errors_file(shard), jsonl_bytes(records))
    return records


def summarise_parts(layout: RunLayout, shard: int) -> list[dict[str, Any]]:
    """Each committed part of the shard: path, records, sha256 and ``batch_s``, the device time of its batch
    (every record of a batch carries it, so this counts the work of every attempt that committed a part)."""
    files = []
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        name = uri.rsplit("/", 1)[-1]
        if name.startswith("part-"):
            data = storage.read_bytes(uri)
            first = data[: data.find(b"\n")] if b"\n" in data else b""
            # a fan-out part copies records generated in a batch already counted
            timings = (json.loads(first).get("timings") or {}) if first and name != FANOUT_PART else {}
            files.append({"path": uri[len(layout.root) :].lstrip("/"), "records": data.count(b"\n"),
                          "sha256": hashlib.sha256(data).hexdigest(),
                          "batch_s": round(float(timings.get("batch_s", 0.0)), 6)})
    return files


def earlier_attempts(layout: RunLayout, shard: int, since_unix: float) -> tuple[int, float]:
    """Worker processes that started on the shard before ``since_unix`` (this worker's start) and their wall
    time summed, a killed one up to the last batch it began: what resumes cost before this commit."""
    from genbatch.run.attempts import summarise

    root = layout.root
    listing = [uri[len(root):].lstrip("/") for uri in storage.list_uris(layout.attempts_dir(shard))]
    earlier = [a for a in summarise(root, listing, shard + 1)
               if a.shard == shard and a.started_unix is not None and a.started_unix < since_unix]
    return len(earlier), sum((a.last_seen_unix or a.started_unix or 0.0) - (a.started_unix or 0.0) for a in earlier)


def shard_total(layout: RunLayout, shard: int) -> int | None:
    """Item count of a shard from the preprocess plan, for progress ETA (None if unknown)."""
    if not storage.exists(layout.shard_plan):
        return None
    plan = storage.read_json(layout.shard_plan)
    return next((int(s["items"]) for s in plan.get("shards", []) if s["shard"] == shard), None)


def _load(state: RunState, device: str, model: ModelVersion | None = None) -> Any:
    # Downloaded (gs://) weights live only while loading; the pod mounts an ephemeral volume here.
    with tempfile.TemporaryDirectory(prefix="genbatch-model-", dir=os.environ.get("GENBATCH_MODEL_CACHE")) as cache:
        model_dir = fetch_verified(model or state.model, Path(cache))
        return load_runner(state.spec.task, model_dir, generation=state.spec.generation.model_dump(),
                           precision=state.spec.model.precision, device=device)


def run_subshard(run: RunRef, shard: int, rank: int, world: int, device: str, runner: Any = None,
                 candidate_runner: Any = None) -> dict[str, Any]:
    """One device's share of a shard: items at positions ≡ rank (mod world); ``run``: its state or run dir."""
    state = as_run_state(run)
    layout = state.layout
    removed = storage.remove_stale_temp_files(layout.outputs_dir(shard), older_than_s=STALE_TEMP_S)
    if removed:
        log.info("shard %s: removed %s temp files left by killed writers", shard, removed)
    done, next_parts = committed_parts(layout, shard)
    # This attempt's record (models/attempts.py): written now, before the model loads, and ended on exit.
    STOP.starting = True
    try:
        attempt = AttemptRecorder(layout, shard, rank, run_id=state.run_id, resumed_items=len(done),
                                  first_part=next_parts.get(rank, 0), device=device, interrupted=WorkerInterrupted)
        STOP.on_startup_stop = lambda: attempt.finish("sigterm", "stopped during start-up, before generating")
        return _run_attempt(attempt, state, shard, rank, world, device, done, next_parts, runner, candidate_runner)
    finally:
        STOP.starting = False
        STOP.on_startup_stop = None


def _run_attempt(attempt: AttemptRecorder, state: RunState, shard: int, rank: int, world: int, device: str,
                 done: Positions, next_parts: dict[int, int], runner: Any, candidate_runner: Any) -> dict[str, Any]:
    layout = state.layout
    with attempt:
        t0 = time.perf_counter()
        if runner is None:
            runner = _load(state, device)
        if state.canary_model is not None and candidate_runner is None:
            candidate_runner = _load(state, device, state.canary_model)
        load_s = time.perf_counter() - t0
        total = shard_total(layout, shard)
        sub_total = None if total is None else len(range(rank, total, world))
        worker = ShardWorker(state, shard, runner, batch_size=state.spec.generation.batch_size, rank=rank,
                             device=device, total=sub_total, candidate_runner=candidate_runner)
        worker.attempt = attempt
        worker.run(read_items(layout.shard_input(shard, state.num_shards), done, rank, world), next_parts.get(rank, 0))
    return {**worker.stats, "model_load_s": load_s, "resumed_items": len(done), "rank": rank, "device": device}


def _child(run_dir: str, shard: int, rank: int, world: int, device: str, results: Any) -> None:
    from genbatch.stages.generate import die_with_parent

    die_with_parent()  # a killed worker leaves no device process generating on its own
    STOP.install()
    logs.configure(text_format=f"%(asctime)s %(levelname)s rank{rank} %(name)s: %(message)s")
    logs.bind(run_id=logs.run_id_of(run_dir), shard=shard, rank=rank)
    results.put(run_subshard(run_dir, shard, rank, world, device))


def _run_devices(run_dir: str, shard: int, devices: list[str]) -> list[dict[str, Any]]:
    """One spawned process per device; a crashed child fails the shard with its exit code."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(run_dir, shard, rank, len(devices), dev, results), daemon=False)
             for rank, dev in enumerate(devices)]
    for p in procs:
        p.start()
    stats: list[dict[str, Any]] = []
    try:
        while len(stats) < len(procs):
            try:
                stats.append(results.get(timeout=1.0))
            except Exception:  # noqa: BLE001 - queue.Empty: check the children are alive
                dead = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
                if dead:
                    raise ShardFailed(f"shard {shard}: device process rank {dead[0][0]} ({devices[dead[0][0]]}) "
                                      f"exited with code {dead[0][1]}; the shard is not committed, rerun it to resume") from None
                if all(p.exitcode == 0 for p in procs) and results.empty():
                    break
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return sorted(stats, key=lambda s: s["rank"])


def run_shard(run: RunRef, shard: int, *, devices: list[str] | None = None, device: str | None = None,
              runner: Any = None) -> dict[str, Any]:
    """Generate one shard of ``run`` (its state or run dir); safe to call again after a crash or on a finished shard."""
    t_start = time.perf_counter()
    state = as_run_state(run)
    run_dir = state.layout.root
    layout = state.layout
    devices = devices or ([device] if device else None) or state.spec.execution.devices or default_devices()
    if not 0 <= shard < state.num_shards:
        raise ShardInputError(f"shard {shard} out of range: this run has {state.num_shards} shards (0..{state.num_shards - 1})")
    if storage.exists(layout.shard_manifest(shard)):
        log.info("run %s shard %s: already committed, nothing to do", state.run_id, shard)
        return dict(storage.read_json(layout.shard_manifest(shard)))
    if not storage.exists(layout.shard_input(shard, state.num_shards)):
        raise ShardInputError(f"shard input {layout.shard_input(shard, state.num_shards)} does not exist; "
                              "run the preprocess stage first")
    if len(devices) == 1 or runner is not None:
        ranks = [run_subshard(state, shard, 0, 1, devices[0], runner)]
    else:
        ranks = _run_devices(run_dir, shard, devices)
    errors = merge_errors(layout, shard)
    parts = summarise_parts(layout, shard)
    generated = sum(p["records"] for p in parts)
    finished = generated + len(errors)
    if finished and len(errors) / finished > state.spec.quality.max_error_rate:
        first = "; ".join(f"{e['id']}: {e['error'][:120]}" for e in errors[:3])
        raise ShardFailed(
            f"run {state.run_id} shard {shard}: {len(errors)} of {finished} items failed generation "
            f"({len(errors) / finished:.1%} > max_error_rate {state.spec.quality.max_error_rate:.1%}); "
            f"first errors: {first}. See {layout.errors_file(shard)}"
        )
    compute_s = sum(r["compute_s"] for r in ranks)
    wall_s = time.perf_counter() - t_start
    n_earlier, earlier_wall = earlier_attempts(layout, shard, time.time() - wall_s)
    manifest = {
        "run_id": state.run_id,
        "shard": shard,
        "model_version": state.model.ref,
        "generated": generated,
        "errored": len(errors),
        "parts": parts,
        "devices": devices,
        "resumed_items": ranks[0]["resumed_items"],
        "batches_this_attempt": sum(r["batches"] for r in ranks),
        "oom_halvings": sum(r["oom_halvings"] for r in ranks),
        # compute_s: the device time of every committed batch, whichever attempt ran it (what cost and
        # throughput are priced on); the *_this_attempt figures are the last worker's own.
        "timings": {"model_load_s": round(max(r["model_load_s"] for r in ranks), 3),
                    "compute_s": round(max(compute_s, sum(p["batch_s"] for p in parts)), 3),
                    "compute_s_this_attempt": round(compute_s, 3),
                    "wall_s": round(wall_s, 3),
                    "earlier_attempts": n_earlier,
                    "wall_s_all_attempts": round(wall_s + earlier_wall, 3)},
    }
    storage.write_json(layout.shard_manifest(shard), manifest)
    log.info("run %s shard %s: committed %s generated, %s errored", state.run_id, shard, generated, len(errors))
    return manifest


def write_xcom_return(run_dir: str, shard: int) -> None:
    """In a KubernetesPodOperator pod, hand the shard manifest URI back through the XCom sidecar."""
    target = os.environ.get("GENBATCH_XCOM_RETURN")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps({"shard": shard, "shard_manifest": RunLayout(run_dir).shard_manifest(shard)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbatch worker", description="Generate one shard of a run.")
    parser.add_argument("--run-dir", required=True, help="run directory URI (local path or gs://)")
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--devices", help="comma-separated torch devices, one process each "
                        "(default: every visible GPU, else cpu); e.g. cuda:0,cuda:1 or cpu,cpu")
    parser.add_argument("--device", help="a single device (same as --devices with one entry)")
    args = parser.parse_args(argv)
    logs.configure()
    logs.bind(run_id=logs.run_id_of(args.run_dir), shard=args.shard)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    STOP.install()
    try:
        manifest = run_shard(args.run_dir, args.shard, devices=devices, device=args.device)
        write_xcom_return(args.run_dir, args.shard)
    except WorkerInterrupted as exc:
        print(f"genbatch worker: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GenbatchError as exc:
        print(f"genbatch worker: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("shard", "generated", "errored", "timings")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
