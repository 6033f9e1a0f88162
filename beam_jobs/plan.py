"""The shard plan from fixed-size records: dedupe ids, optional fan-out, LPT; numpy, no per-row objects.

The plan is the one place that needs every row at once (longest-processing-time first is a
global greedy), so the rows reach it as fixed-size binary records written by the measuring
step — (row index, 128-bit id digest, prompt tokens, cost, flag[, content digest]), 37 or 53
bytes a row — never as items. The plan sorts them in place (no n-sized temporaries). The
result is a few arrays indexed by row index (6 bytes a row) that the routing step loads as a
side input: the shard or fate of every row, and its token count.

Everything here is deterministic in the *set* of records: ids are grouped by digest and the
lowest row index wins; LPT takes jobs costliest first with ties by row index, and a shard of
equal load by its number. So the plan does not depend on the runner, the bundling or the order
records arrive in.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from beam_jobs.records import LptState
from genbatch.io import storage

BASE_FIELDS = [("index", "<i8"), ("id_hi", "<u8"), ("id_lo", "<u8"), ("tokens", "<i4"), ("cost", "<f8"), ("drop", "u1")]
CONTENT_FIELDS = [("c_hi", "<u8"), ("c_lo", "<u8")]
NOT_ROUTED = -1  # not in the plan: rejected earlier in the job (token budget), or never accepted
DUPLICATE = -2  # a later row with an id already used: a duplicate_id reject
FANOUT = -3  # same (prompt, params, seed) as an earlier row: generated once, fanned out at publish
RECORD_CHUNK = 1 << 16
LPT_CHUNK = 1 << 16


def record_dtype(with_content: bool) -> np.dtype[Any]:
    return np.dtype(BASE_FIELDS + (CONTENT_FIELDS if with_content else []))


class RecordBuffer:
    """Collects records of one bundle in a fixed-size array; each full chunk becomes one file."""

    def __init__(self, tmp_dir: str, with_content: bool, chunk: int = RECORD_CHUNK) -> None:
        self.tmp_dir = tmp_dir
        self.with_content = with_content
        self.chunk = chunk
        self.array = np.zeros(chunk, dtype=record_dtype(with_content))
        self.size = 0

    def add(self, index: int, id_digest: tuple[int, int], tokens: int, cost: float,
            content: tuple[int, int] | None = None) -> tuple[str, int] | None:
        """Add one record; returns (file URI, count) when the chunk filled and was written."""
        values: tuple[Any, ...] = (index, id_digest[0], id_digest[1], tokens, cost, 0)
        if self.with_content:
            if content is None:
                raise ValueError("content digest required when deduping identical items")
            values += content
        self.array[self.size] = values
        self.size += 1
        return self.flush() if self.size == self.chunk else None

    def flush(self) -> tuple[str, int] | None:
        if self.size == 0:
            return None
        out = io.BytesIO()
        np.save(out, self.array[: self.size], allow_pickle=False)
        uri = storage.join(self.tmp_dir, "records", f"{uuid.uuid4().hex}.npy")
        storage.write_bytes(uri, out.getvalue())
        count, self.size = self.size, 0
        return uri, count


def load_records(files: Iterable[tuple[str, int]], with_content: bool) -> np.ndarray[Any, Any]:
    """All records in one preallocated array (files read one at a time: no second copy)."""
    files = sorted(files)
    total = sum(count for _, count in files)
    records = np.zeros(total, dtype=record_dtype(with_content))
    at = 0
    for uri, count in files:
        part = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
        if len(part) != count or part.dtype != records.dtype:
            raise ValueError(f"record file {uri} holds {len(part)} {part.dtype} records, expected {count}")
        records[at:at + count] = part
        at += count
    return records


@dataclass
class Plan:
    """Per row index: ``route`` (shard >= 0, or NOT_ROUTED/DUPLICATE/FANOUT) and ``tokens``;
    sorted (row, kept row) pairs for duplicates and fan-out rows; canonical rows with fan-out."""

    route: np.ndarray[Any, Any]
    tokens: np.ndarray[Any, Any]
    dup_rows: np.ndarray[Any, Any]
    dup_of: np.ndarray[Any, Any]
    fan_rows: np.ndarray[Any, Any]
    fan_of: np.ndarray[Any, Any]
    canon_rows: np.ndarray[Any, Any]

    FIELDS = ("route", "tokens", "dup_rows", "dup_of", "fan_rows", "fan_of", "canon_rows")

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, **{name: getattr(self, name) for name in self.FIELDS})
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Plan:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(**{name: z[name] for name in cls.FIELDS})

    def route_of(self, index: int) -> int:
        return int(self.route[index]) if 0 <= index < len(self.route) else NOT_ROUTED

    def tokens_of(self, index: int) -> int:
        return int(self.tokens[index])

    def kept_row(self, index: int) -> int:
        """The row a DUPLICATE (or FANOUT) row gives way to."""
        rows, of = (self.dup_rows, self.dup_of) if self.route_of(index) == DUPLICATE else (self.fan_rows, self.fan_of)
        at = int(np.searchsorted(rows, index))
        if at >= len(rows) or rows[at] != index:
            raise KeyError(f"row {index} is neither a duplicate nor a fan-out row")
        return int(of[at])

    def is_canonical(self, index: int) -> bool:
        at = int(np.searchsorted(self.canon_rows, index))
        return at < len(self.canon_rows) and int(self.canon_rows[at]) == index


def _scatter(dst: np.ndarray[Any, Any], index: np.ndarray[Any, Any], values: Any) -> None:
    """``dst[index] = values`` in chunks, so strided record fields never get an n-sized copy."""
    for start in range(0, len(index), RECORD_CHUNK):
        part = values[start:start + RECORD_CHUNK] if isinstance(values, np.ndarray) else values
        dst[index[start:start + RECORD_CHUNK]] = part


def _mark_later_of_groups(records: np.ndarray[Any, Any], live: int, fields: list[str]) -> tuple[Any, Any]:
    """Sort ``records[:live]`` in place by ``fields`` then row index; flag all but the first of each
    group of equal ``fields`` (``drop = 1``). Returns (row index of each flagged, row index kept)."""
    view = records[:live]
    view.sort(order=[*fields, "index"])  # in place: no n-sized temporaries; keys are unique (index)
    same = np.ones(max(live - 1, 0), dtype=bool)
    for name in fields:
        column = view[name]
        same &= column[1:] == column[:-1]
    later = np.flatnonzero(same) + 1  # positions equal to their predecessor: not first of their group
    if not len(later):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # A run of consecutive later positions shares the group head just before the run.
    new_run = np.ones(len(later), dtype=bool)
    new_run[1:] = later[1:] != later[:-1] + 1
    head = np.where(new_run, later - 1, 0)
    np.maximum.accumulate(head, out=head)
    rows, kept = view["index"][later].astype(np.int64), view["index"][head].astype(np.int64)
    view["drop"][later] = 1
    return rows, kept


def build_plan(records: np.ndarray[Any, Any], num_shards: int, with_content: bool) -> tuple[Plan, dict[str, Any]]:
    """Dedupe ids (first row wins), optionally fan out identical items, LPT the rest over shards.

    Works in place on ``records`` (sorted three times, no per-row Python objects, no n-sized
    index arrays), so the plan step peaks at about the records themselves plus 6 bytes a row.
    """
    n = len(records)
    size = int(records["index"].max()) + 1 if n else 0
    tokens = np.zeros(size, dtype=np.int32)
    _scatter(tokens, records["index"], records["tokens"])
    records["drop"] = 0

    # 1. Duplicate ids: the lowest row index of each id digest is kept.
    dup_rows, dup_kept = _mark_later_of_groups(records, n, ["id_hi", "id_lo"])
    records.sort(order=["drop", "index"])  # the kept rows first
    live = n - len(dup_rows)

    # 2. Identical (prompt, params, seed) among the kept rows: generate once, fan out later.
    fan_rows, fan_kept = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if with_content and live:
        fan_rows, fan_kept = _mark_later_of_groups(records, live, ["c_hi", "c_lo"])
        live -= len(fan_rows)

    # 3. LPT over the jobs, costliest first, ties by row index (unique, runner-independent).
    records["cost"] *= -1.0
    records.sort(order=["drop", "cost", "index"])
    records["cost"] *= -1.0
    route = np.full(size, NOT_ROUTED, dtype=np.int16 if num_shards < 2**15 else np.int32)
    counts = np.zeros(num_shards, dtype=np.int64)
    loads = np.zeros(num_shards, dtype=np.float64)
    state = LptState(num_shards)
    for start in range(0, live, LPT_CHUNK):
        chunk = records[start:min(start + LPT_CHUNK, live)]
        shards = np.asarray(state.assign(chunk["cost"].tolist()), dtype=np.int64)
        route[chunk["index"]] = shards
        counts += np.bincount(shards, minlength=num_shards)
        loads += np.bincount(shards, weights=chunk["cost"], minlength=num_shards)
    route[dup_rows] = DUPLICATE
    route[fan_rows] = FANOUT
    jobs = records[:live]
    total = float(loads.sum())
    max_cost = float(jobs["cost"][0]) if live else 0.0
    lower_bound = max(total / num_shards, max_cost) if total else 0.0

    dup_order = np.argsort(dup_rows, kind="stable")
    fan_order = np.argsort(fan_rows, kind="stable")
    plan = Plan(
        route=route,
        tokens=tokens,
        dup_rows=dup_rows[dup_order],
        dup_of=dup_kept[dup_order],
        fan_rows=fan_rows[fan_order],
        fan_of=fan_kept[fan_order],
        canon_rows=np.unique(fan_kept).astype(np.int64),
    )
    stats = {
        "num_shards": num_shards,
        "shards": [{"shard": s, "items": int(counts[s]), "est_cost": float(loads[s])} for s in range(num_shards)],
        "items": int(live),
        "est_cost_total": total,
        "max_item_cost": max_cost,
        "makespan_ratio": (float(loads.max()) / lower_bound) if lower_bound else 1.0,
        "rows_planned": int(n),
        "duplicate_ids": int(len(dup_rows)),
        "fanned_out": int(len(fan_rows)),
    }
    return plan, stats
