"""The shard worker: what one pod (or one local process) runs for one shard.

It reads the run's resolved spec and one shard file, generates in length-bucketed batches
and commits each batch as one create-only part file. A killed worker resumes by skipping
the ids already committed, so it redoes at most the batch that was in flight. The shard
commits by writing its manifest last. It knows nothing about Airflow.

CLI: ``genbatch worker --run-dir URI --shard K [--device cpu]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from genbatch import storage
from genbatch.errors import GenbatchError, ShardInputError
from genbatch.items import ITEM_FIELDS
from genbatch.layout import RunLayout
from genbatch.run_state import RunState, load_run_state
from models.batching import windows
from models.registry import fetch_verified
from models.runners import Item, load_runner

log = logging.getLogger(__name__)

AUTO_BATCH = {"text": (16, 64), "image": (4, 16)}  # (start, cap) per task on one device
WINDOW_BATCHES = 8


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM (or an injected one in tests) halves the batch instead of failing the shard."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def read_items(shard_uri: str, skip_ids: set[str]) -> Iterator[Item]:
    for line_no, line in enumerate(storage.iter_lines(shard_uri), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
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
        if item.id not in skip_ids:
            yield item


def committed_parts(layout: RunLayout, shard: int) -> tuple[set[str], int]:
    """Ids already committed by earlier attempts, and the next free part number."""
    done: set[str] = set()
    next_part = 0
    prefix = layout.outputs_dir(shard)
    for uri in storage.list_uris(prefix):
        name = uri.rsplit("/", 1)[-1]
        if not (name.startswith("part-") or name.startswith("errors-")) or not name.endswith(".jsonl"):
            continue
        next_part = max(next_part, int(name.split("-")[1].split(".")[0]) + 1)
        for line in storage.iter_lines(uri):
            if line.strip():
                done.add(json.loads(line)["id"])
    return done, next_part


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


class ShardWorker:
    """Runs one shard to completion; ``runner`` is injectable so tests can hand in a fake."""

    def __init__(self, state: RunState, shard: int, runner: Any, *, batch_size: int | str) -> None:
        self.state = state
        self.layout = state.layout
        self.shard = shard
        self.runner = runner
        start, cap = AUTO_BATCH[state.spec.task]
        self.auto = batch_size == "auto"
        self.batch_size = start if self.auto else int(batch_size)
        self.cap = cap if self.auto else int(batch_size)
        self.stats = {"batches": 0, "generated": 0, "errored": 0, "oom_halvings": 0, "compute_s": 0.0}
        self.parts: list[str] = []

    def _base_record(self, item: Item) -> dict[str, Any]:
        meta = {k: v for k, v in item.record.items() if k not in ITEM_FIELDS}
        return {
            "id": item.id,
            "row_index": item.record.get("row_index"),
            "seed": item.seed,
            "model_version": self.state.model.ref,
            "params_hash": self.state.params_hash,
            "metadata": meta,
        }

    def _run_with_oom_backoff(self, batch: list[Item]) -> list[tuple[Item, dict[str, Any] | BaseException]]:
        try:
            t0 = time.perf_counter()
            results = self.runner.run_batch(batch)
            elapsed = time.perf_counter() - t0
            self.stats["compute_s"] += elapsed
            return [(it, {**res, "batch_s": elapsed, "batch_size": len(batch)}) for it, res in zip(batch, results, strict=True)]
        except Exception as exc:  # noqa: BLE001 - classified below, nothing swallowed
            if is_oom(exc) and len(batch) > 1:
                self.stats["oom_halvings"] += 1
                self.batch_size = max(1, len(batch) // 2)
                self.cap = self.batch_size
                log.warning("shard %s: out of memory at batch %s, halving to %s", self.shard, len(batch), self.batch_size)
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
        for item, res in results:
            rec = self._base_record(item)
            if isinstance(res, BaseException):
                errors.append({**rec, "error": f"{type(res).__name__}: {res}"[:2000]})
                continue
            timings = {"batch_s": round(res.pop("batch_s"), 6), "batch_size": res.pop("batch_size")}
            image = res.pop("image", None)
            if image is not None:
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                uri = self.layout.image_path(self.shard, item.id)
                storage.write_bytes(uri, buf.getvalue(), content_type="image/png")
                res["image_path"] = uri[len(self.layout.root) :].lstrip("/")
            outputs.append({**rec, **res, "timings": timings})
        # Errors first, outputs last: the part file is the batch's commit point.
        if errors:
            storage.write_bytes(self.layout.error_part(self.shard, part), _jsonl(errors))
        if outputs:
            uri = self.layout.output_part(self.shard, part)
            storage.write_bytes(uri, _jsonl(outputs))
            self.parts.append(uri)
        self.stats["generated"] += len(outputs)
        self.stats["errored"] += len(errors)
        self.stats["batches"] += 1

    def run(self, items: Iterator[Item], first_part: int) -> None:
        part = first_part
        length: Callable[[Item], int] = lambda it: self.runner.token_length(it.prompt)  # noqa: E731
        for window in windows(items, self.cap * WINDOW_BATCHES):
            groups: dict[str, list[Item]] = {}
            for it in window:
                groups.setdefault(json.dumps(it.params, sort_keys=True), []).append(it)
            for key in sorted(groups):
                pending = sorted(groups[key], key=length)
                while pending:
                    batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                    self._commit_batch(part, self._run_with_oom_backoff(batch))
                    part += 1
                    if self.auto and self.batch_size < self.cap:
                        self.batch_size = min(self.cap, self.batch_size * 2)


def merge_errors(layout: RunLayout, shard: int) -> int:
    """Fold the per-batch error parts into errors/shard-K.jsonl (deterministic, so idempotent)."""
    records: list[str] = []
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        if uri.rsplit("/", 1)[-1].startswith("errors-"):
            records.extend(line for line in storage.iter_lines(uri) if line.strip())
    storage.write_bytes(layout.errors_file(shard), "".join(r + "\n" for r in records).encode())
    return len(records)


def summarise_parts(layout: RunLayout, shard: int) -> list[dict[str, Any]]:
    files = []
    for uri in storage.list_uris(layout.outputs_dir(shard)):
        name = uri.rsplit("/", 1)[-1]
        if name.startswith("part-"):
            lines = [ln for ln in storage.iter_lines(uri) if ln.strip()]
            files.append({"path": uri[len(layout.root) :].lstrip("/"), "records": len(lines),
                          "sha256": hashlib.sha256(storage.read_bytes(uri)).hexdigest()})
    return files


def run_shard(run_dir: str, shard: int, *, device: str = "cpu", runner: Any = None) -> dict[str, Any]:
    """Generate one shard; safe to call again after a crash or on a finished shard."""
    t_start = time.perf_counter()
    state = load_run_state(run_dir)
    layout = state.layout
    if not 0 <= shard < state.num_shards:
        raise ShardInputError(f"shard {shard} out of range: this run has {state.num_shards} shards (0..{state.num_shards - 1})")
    if storage.exists(layout.shard_manifest(shard)):
        log.info("run %s shard %s: already committed, nothing to do", state.run_id, shard)
        return dict(storage.read_json(layout.shard_manifest(shard)))
    shard_uri = layout.shard_input(shard, state.num_shards)
    if not storage.exists(shard_uri):
        raise ShardInputError(f"shard input {shard_uri} does not exist; run the preprocess stage first")
    done, next_part = committed_parts(layout, shard)
    if done:
        log.info("run %s shard %s: resuming, %s items already committed", state.run_id, shard, len(done))
    load_s = 0.0
    if runner is None:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="genbatch-model-") as cache:
            model_dir = fetch_verified(state.model, Path(cache))
            runner = load_runner(state.spec.task, model_dir, generation=state.spec.generation.model_dump(),
                                 precision=state.spec.model.precision, device=device)
        load_s = time.perf_counter() - t0
    worker = ShardWorker(state, shard, runner, batch_size=state.spec.generation.batch_size)
    worker.run(read_items(shard_uri, done), next_part)
    errored = merge_errors(layout, shard)
    parts = summarise_parts(layout, shard)
    generated = sum(p["records"] for p in parts)
    manifest = {
        "run_id": state.run_id,
        "shard": shard,
        "model_version": state.model.ref,
        "generated": generated,
        "errored": errored,
        "parts": parts,
        "resumed_items": len(done),
        "batches_this_attempt": worker.stats["batches"],
        "oom_halvings": worker.stats["oom_halvings"],
        "timings": {"model_load_s": round(load_s, 3), "compute_s": round(worker.stats["compute_s"], 3),
                    "wall_s": round(time.perf_counter() - t_start, 3)},
        "device": device,
    }
    storage.write_json(layout.shard_manifest(shard), manifest)
    log.info("run %s shard %s: committed %s generated, %s errored", state.run_id, shard, generated, errored)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbatch worker", description="Generate one shard of a run.")
    parser.add_argument("--run-dir", required=True, help="run directory URI (local path or gs://)")
    parser.add_argument("--shard", required=True, type=int)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        manifest = run_shard(args.run_dir, args.shard, device=args.device)
    except GenbatchError as exc:
        print(f"genbatch worker: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("shard", "generated", "errored", "timings")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
