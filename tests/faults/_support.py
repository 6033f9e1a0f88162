"""What the fault tests share: real runs built in-process, a consumer that polls, figures to record.

A run here goes through the real stages in-process (``prepare_run`` → ``validate_input`` (GX) →
the Beam preprocess job → ``run_shard`` per shard → ``quality_gate`` → ``publish``), the same
functions the Airflow operators call. Only the model is a seam: :class:`EchoRunner` is a fast,
deterministic stand-in where generation is not the point (storage faults); the real tiny models
are used where it is (interrupted runs, racing workers).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.outputs import RunNotPublishedError, read
from genbatch.run.state import load_run_state
from tests.injection import injection_enabled

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "examples" / "catalog" / "items.jsonl"
REPORT_ENV = "GENBATCH_FAULTS_REPORT"
REPEAT_ENV = "GENBATCH_FAULTS_REPEAT"
SEED_ENV = "GENBATCH_FAULTS_SEED"
TIMING_KEYS = ("timings",)


def catalog_rows(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in CATALOG.read_text().splitlines() if line.strip()]
    return [{**rows[i % len(rows)], "id": f"sku-{i:05d}"} for i in range(n)]


def write_input(path: Path, rows: Iterable[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def text_spec(input_uri: str, output_uri: str, registry: str, *, run_id: str, num_shards: int = 2,
              batch_size: int = 4, max_new_tokens: int = 8, **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "run_id": run_id,
        "task": "text",
        "input": {"uri": input_uri},
        "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
        "generation": {"max_new_tokens": max_new_tokens, "seed": 11, "batch_size": batch_size},
        "sharding": {"num_shards": num_shards},
        "quality": {"max_reject_rate": 1.0, "min_success_rate": 0.0, "min_nonempty_rate": 0.0},
        "output": {"uri": output_uri},
    }
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


# --------------------------------------------------------------------------- stages


def prepare(spec: dict[str, Any]) -> str:
    """prepare_run → validate_input → Beam preprocess; returns the run dir."""
    from beam_jobs.preprocess import run as preprocess
    from genbatch.stages.prepare import prepare_run
    from genbatch.stages.validate import validate_input
    from models.registry import resolve_for_spec

    run_dir = prepare_run(spec, spec["run_id"], resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    return run_dir


def finish(run_dir: str, runner: Any) -> dict[str, Any]:
    """Generate every shard (in-process), then the quality gate and publish."""
    from genbatch.stages.publish import publish
    from genbatch.stages.quality import quality_gate
    from models.worker import run_shard

    state = load_run_state(run_dir)
    for shard in range(state.num_shards):
        run_shard(run_dir, shard, runner=runner)
    quality_gate(run_dir)
    return publish(run_dir)


def clone_run(src: str, dst_parent: str) -> str:
    """Copy a prepared run dir (every object, same run_id) under another parent; returns the copy."""
    name = src.rstrip("/").rsplit("/", 1)[-1]
    dst = storage.join(dst_parent, name)
    for uri in storage.list_uris(src):
        storage.write_bytes(storage.join(dst, uri[len(src):]), storage.read_bytes(uri))
    return dst


def published_records(run_dir: str) -> dict[str, dict[str, Any]]:
    """What a consumer reads, by id, minus wall-clock fields (equal runs give equal dicts)."""
    out = {}
    for rec in read(run_dir, wait_s=0):
        out[rec["id"]] = {k: v for k, v in rec.items() if k not in TIMING_KEYS}
    return out


def published_ids(run_dir: str) -> Counter[str]:
    """Every id a consumer reads, counted (a doubled record shows as 2)."""
    return Counter(str(rec["id"]) for rec in read(run_dir, wait_s=0))


def image_bytes(run_dir: str) -> dict[str, bytes]:
    layout = RunLayout(run_dir)
    return {uri[len(layout.root):]: storage.read_bytes(uri) for uri in storage.list_uris(layout.path("outputs"))
            if uri.endswith(".png")}


# --------------------------------------------------------------------------- damage, under the switch


def apply_damage(uri: str | Path, data: bytes | None) -> int:
    """Write ``data`` to ``uri`` (delete it when None) unless injection is off; 1 if the object
    changed, so what a test counts as injected is what was really done."""
    uri = str(uri)
    before = storage.read_bytes(uri) if storage.exists(uri) else None
    if injection_enabled():
        if data is None:
            storage.delete(uri)
        else:
            storage.write_bytes(uri, data, overwrite=True)
    return int(before != (storage.read_bytes(uri) if storage.exists(uri) else None))


# --------------------------------------------------------------------------- the model seam


@dataclass
class EchoRunner:
    """Deterministic, instant stand-in for a text runner; logs every call like the harness probe."""

    fail_ids: frozenset[str] = frozenset()
    calls: list[list[str]] = field(default_factory=list)
    before_batch: Callable[[list[Any]], None] | None = None

    def token_length(self, prompt: str) -> int:
        return len(prompt.split())

    def run_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        if self.before_batch is not None:
            self.before_batch(items)
        self.calls.append([it.id for it in items])
        if any(it.id in self.fail_ids for it in items):
            raise ValueError(f"injected generation failure in {[it.id for it in items if it.id in self.fail_ids]}")
        return [{"output": f"{it.prompt.split(chr(10))[0]} (seed {it.seed})", "new_tokens": 3} for it in items]

    def attempt_log(self, path: Path, attempt: str) -> None:
        """Append this runner's calls as attempt ``attempt`` (the harness probe's format)."""
        with path.open("a") as f:
            for ids in self.calls:
                f.write(json.dumps({"pid": attempt, "ids": ids}) + "\n")
        self.calls.clear()


# --------------------------------------------------------------------------- a polling consumer


class Consumer(threading.Thread):
    """Reads the run through ``genbatch.run.outputs.read`` in a loop while it is being produced.

    Every read must either find the run unpublished having yielded nothing, or yield exactly
    the final records; anything else is a partial read.
    """

    def __init__(self, run_dir: str, poll_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.run_dir = run_dir
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self.not_published = 0
        self.full_reads: list[Counter[str]] = []
        self.partial: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.is_set():
            seen: list[str] = []
            try:
                for rec in read(self.run_dir, wait_s=0):
                    seen.append(rec["id"])
                self.full_reads.append(Counter(seen))
            except RunNotPublishedError:
                self.not_published += 1
                if seen:
                    self.partial.append(f"{len(seen)} records before _SUCCESS")
            except Exception as exc:  # noqa: BLE001 - a failed read is a finding, recorded
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if seen:
                    self.partial.append(f"{len(seen)} records then {type(exc).__name__}")
            time.sleep(self.poll_s)

    def finish(self, final_ids: Counter[str]) -> int:
        """Stop; return the number of partial reads (reads that saw something other than the final set)."""
        self.stop_event.set()
        self.join(timeout=30)
        bad = [c for c in self.full_reads if c != final_ids]
        return len(self.partial) + len(bad)


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """One repeat of one fault class, as bench/faults.py aggregates it."""

    fault_class: str
    injected: int
    observed: int
    lost: int = 0
    doubled: int = 0
    redone: int = 0
    partial_reads: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def record(figures: Figures) -> None:
    """Append to $GENBATCH_FAULTS_REPORT (JSONL) when set; always print one line."""
    line = json.dumps(asdict(figures), sort_keys=True)
    print(f"FAULTS {line}")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
