"""Per-attempt records: what each worker process did on a shard, and the work that was redone.

Every start of a worker on a shard (one process per device rank) is an *attempt*. It keeps three
small objects under ``attempts/shard-K/`` (:meth:`genbatch.layout.RunLayout.attempt_record`):

``r00-<attempt>.json``           create-only, written when the attempt starts (before the model
                                 loads): pid, host, parent pid, start time, items already committed
                                 (what the resume scan found) and the first part number it will use
``r00-<attempt>.batches.jsonl``  the batch in flight, recorded just before the model is called:
                                 ``{"part", "items", "batches_committed", "items_committed"}``; on a
                                 local run dir one line appended per batch (one ``os.write`` on an
                                 O_APPEND fd: a few microseconds), on ``gs://`` one small object
                                 overwritten per batch (one request, next to a model call of seconds)
``r00-<attempt>.end.json``       create-only, written when the attempt exits: ``done``, ``sigterm``
                                 or ``error`` (with the message), batches and items it committed and
                                 the batch it had in flight and did not commit. A SIGKILLed (or
                                 OOM-killed, or crashed) attempt has none: its end state is ``unknown``

The worker only ever begins part P+1 after part P committed, so at most one batch of an attempt is
in flight. Work redone (:func:`summarise`) is the items of that batch when it never committed: for
an attempt with an end record the record says so; for one without, its last begun part committed
iff the part object exists and no later attempt of the same shard and rank began the same part
number (a restart numbers its parts from the highest committed one, so it reuses the number of a
part that never landed). Records never carry item ids or content: erasure has nothing to rewrite in
them, and the output records stay byte-identical whatever the attempts were.

Records are best effort: a failed record write (a full disk, a storage error) is logged and never
replaces the error that matters; a missing record only makes the figures less complete.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

from genbatch import storage
from genbatch.errors import StorageError
from genbatch.layout import RunLayout

log = logging.getLogger(__name__)

RECORD_RE = re.compile(r"^attempts/shard-(\d{5})/r(\d{2})-(\d{8}T\d{12}Z-[0-9a-f]{8})(\.end\.json|\.batches\.jsonl|\.json)$")
_KIND = {".json": "start", ".end.json": "end", ".batches.jsonl": "batches"}
END_STATES = ("done", "sigterm", "error", "unknown")


def new_attempt_id() -> str:
    """Sorts by start time (UTC, microseconds), unique by a random suffix."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


class AttemptRecorder:
    """The records of one attempt; use as a context manager around the attempt's work.

    On exit: no exception -> ``done``; ``interrupted`` (the worker's SIGTERM exception) ->
    ``sigterm``; any other ``Exception`` -> ``error``; a ``BaseException`` that is not an
    ``Exception`` (a crash stand-in, KeyboardInterrupt, SystemExit) writes nothing, like a kill.
    """

    def __init__(self, layout: RunLayout, shard: int, rank: int, *, run_id: str, resumed_items: int,
                 first_part: int, device: str, interrupted: type[BaseException] | None = None) -> None:
        self.layout = layout
        self.shard = shard
        self.rank = rank
        self.attempt_id = new_attempt_id()
        self.interrupted = interrupted
        self.batches_committed = 0
        self.items_committed = 0
        self.in_flight: tuple[int, int] | None = None
        self._local = not storage.is_gcs(layout.root)
        self._fd: int | None = None
        self._journal_ok = True
        self.start = {
            "attempt": self.attempt_id, "run_id": run_id, "shard": shard, "rank": rank,
            "host": socket.gethostname(), "pid": os.getpid(), "ppid": os.getppid(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(), "started_unix": round(time.time(), 6),
            "resumed_items": resumed_items, "first_part": first_part, "device": device,
        }

    def uri(self, kind: str) -> str:
        return self.layout.attempt_record(self.shard, self.rank, self.attempt_id, kind)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> AttemptRecorder:
        self._write(self.uri("start"), self.start)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.finish("done")
        elif self.interrupted is not None and issubclass(exc_type, self.interrupted):
            self.finish("sigterm")
        elif issubclass(exc_type, Exception):
            self.finish("error", f"{exc_type.__name__}: {exc}"[:500])
        else:
            self._close()

    def begin(self, part: int, items: int) -> None:
        """The batch that will commit as ``part`` is handed to the model now."""
        self.in_flight = (part, items)
        line = {"part": part, "items": items, "batches_committed": self.batches_committed,
                "items_committed": self.items_committed, "at": round(time.time(), 6)}
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        if not self._journal_ok:
            return
        try:
            if self._local:
                if self._fd is None:
                    path = storage.local_path(self.uri("batches"))
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(self._fd, data)
            else:
                storage.write_bytes(self.uri("batches"), data, overwrite=True, content_type="application/json")
        except (OSError, StorageError) as exc:
            self._journal_ok = False  # a stale journal is worse than none: stop writing it
            log.warning("shard %s rank %s: could not record the batch in flight (%s); attempt figures "
                        "for %s will be incomplete", self.shard, self.rank, exc, self.attempt_id)

    def committed(self, items: int) -> None:
        """The batch in flight committed (its part object exists)."""
        self.batches_committed += 1
        self.items_committed += items
        self.in_flight = None

    def finish(self, state: str, error: str | None = None) -> None:
        in_flight = None if self.in_flight is None else {"part": self.in_flight[0], "items": self.in_flight[1]}
        self._close()
        self._write(self.uri("end"), {
            "attempt": self.attempt_id, "state": state, "error": error,
            "ended_at": dt.datetime.now(dt.UTC).isoformat(), "ended_unix": round(time.time(), 6),
            "batches_committed": self.batches_committed, "items_committed": self.items_committed,
            "in_flight": in_flight, "journal_complete": self._journal_ok,
        })

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _write(self, uri: str, value: dict[str, Any]) -> None:
        try:
            storage.write_json(uri, value)
        except StorageError as exc:
            log.warning("shard %s rank %s: could not write the attempt record %s: %s", self.shard, self.rank, uri, exc)


class NoRecord:
    """What a worker records when no attempt record is kept (tests that build a ShardWorker by hand)."""

    def begin(self, part: int, items: int) -> None:
        pass

    def committed(self, items: int) -> None:
        pass


# --------------------------------------------------------------------------- reading them back


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
        m = RECORD_RE.match(rel)
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
