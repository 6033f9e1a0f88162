"""Per-attempt records, the reading side: which worker attempts ran on each shard and the work redone.

The worker writes the records (``models/attempts.py``); reconcile reads them back here. An attempt's
work redone is the items of the one batch it had in flight and never committed (docs/internals.md
has the record format and the rules).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from genbatch.errors import StorageError
from genbatch.io import storage
from genbatch.run.layout import ATTEMPT_RECORD_RE, ATTEMPT_SUFFIXES, RunLayout

log = logging.getLogger(__name__)

_KIND = {suffix: kind for kind, suffix in ATTEMPT_SUFFIXES.items()}
END_STATES = ("done", "sigterm", "error", "unknown")


@dataclass
class Attempt:
    """One attempt as its records (and the part objects) show it."""

    shard: int
    rank: int
    attempt: str
    state: str  # done / sigterm / error / unknown (no end record: killed)
    pid: int | None = None
    host: str | None = None
    ppid: int | None = None
    started_unix: float | None = None
    ended_unix: float | None = None
    last_seen_unix: float | None = None  # the end, else the last batch it began
    resumed_items: int | None = None
    first_part: int | None = None
    batches_committed: int = 0
    items_committed: int = 0
    redone: int = 0  # items of the batch it had in flight and never committed
    uncommitted_part: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, as a JSON-ready dict."""
        return asdict(self)


def _last_json_line(data: bytes) -> dict[str, Any] | None:
    """The last complete JSON line (a torn tail, impossible with one small write, is skipped)."""
    for line in reversed(data.split(b"\n")):
        if line.strip():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            return value if isinstance(value, dict) else None
    return None


def _read(root: str, rel: str) -> bytes | None:
    try:
        return storage.read_bytes(storage.join(root, rel))
    except StorageError as exc:
        log.warning("could not read attempt record %s: %s", rel, exc)
        return None


def summarise(root: str, listing: Iterable[str], num_shards: int) -> list[Attempt]:
    """Every attempt of the run dir ``root``, from the records in ``listing`` (paths relative to root).

    Sorted by shard, rank and start; ``redone`` and ``items_committed`` are filled in as the module
    docstring says.
    """
    listing = list(listing)
    layout = RunLayout(root)
    present = {storage.join(root, rel) for rel in listing}  # full URIs, as the layout names parts
    files: dict[tuple[int, int, str], dict[str, str]] = {}
    for rel in listing:
        m = ATTEMPT_RECORD_RE.match(rel)
        if m and int(m.group(1)) < num_shards:
            files.setdefault((int(m.group(1)), int(m.group(2)), m.group(3)), {})[_KIND[m.group(4)]] = rel
    attempts: list[tuple[Attempt, dict[str, Any] | None, dict[str, Any] | None]] = []
    for (shard, rank, attempt_id), kinds in sorted(files.items()):
        start = json.loads(_read(root, kinds["start"]) or b"{}") if "start" in kinds else {}
        end = json.loads(_read(root, kinds["end"]) or b"null") if "end" in kinds else None
        batch = _last_json_line(_read(root, kinds["batches"]) or b"") if "batches" in kinds else None
        a = Attempt(shard, rank, attempt_id, state=str(end["state"]) if end else "unknown",
                    pid=start.get("pid"), host=start.get("host"), ppid=start.get("ppid"),
                    started_unix=start.get("started_unix"), resumed_items=start.get("resumed_items"),
                    first_part=start.get("first_part"))
        if end:
            a.ended_unix = end.get("ended_unix")
            a.error = end.get("error")
        a.last_seen_unix = a.ended_unix or (batch or {}).get("at") or a.started_unix
        attempts.append((a, batch, end))

    for n, (a, batch, end) in enumerate(attempts):
        if end is not None and end.get("journal_complete", True):
            a.batches_committed = int(end.get("batches_committed", 0))
            a.items_committed = int(end.get("items_committed", 0))
            flight = end.get("in_flight")
            if flight:
                a.redone, a.uncommitted_part = int(flight["items"]), int(flight["part"])
            continue
        if batch is None:
            continue  # killed before it began a batch (start-up, model load, resume scan)
        part, items = int(batch["part"]), int(batch["items"])
        a.batches_committed = int(batch["batches_committed"])
        a.items_committed = int(batch["items_committed"])
        later_began = any(b.shard == a.shard and b.rank == a.rank and bb is not None and int(bb["part"]) >= part
                          and (b.first_part is None or b.first_part <= part)
                          for b, bb, _ in attempts[n + 1:])
        exists = layout.output_part(a.shard, part, a.rank) in present
        if exists and not later_began:
            a.batches_committed += 1
            a.items_committed += items
        else:
            a.redone, a.uncommitted_part = items, part
    return [a for a, _, _ in attempts]


def figures(attempts: list[Attempt]) -> dict[str, Any]:
    """What reconcile reports: counts by end state, work redone, attempts that overlapped in time."""
    overlapping = 0
    for i, a in enumerate(attempts):
        for b in attempts[i + 1:]:
            if (b.shard, b.rank) != (a.shard, a.rank) or a.last_seen_unix is None or b.started_unix is None:
                continue
            if b.started_unix < a.last_seen_unix:
                overlapping += 1
    redone = [a.redone for a in attempts]
    return {
        "count": len(attempts),
        "by_state": dict(sorted(Counter(a.state for a in attempts).items())),
        "work_redone": sum(redone),
        "max_work_redone": max(redone, default=0),
        "overlapping": overlapping,
    }
