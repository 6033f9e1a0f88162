"""Per-attempt records, the writing side: what each worker process does on a shard.

Every start of a worker on a shard (one process per device rank) is an *attempt* with three small
objects under ``attempts/shard-K/`` (:meth:`genbatch.run.layout.RunLayout.attempt_record`): a start
record, the batch in flight, and an end record (absent when the attempt was killed). Reading them
back, and the work-redone figure, is :mod:`genbatch.run.attempts`; the format is in
docs/internals.md. Records are best effort: a failed write is logged and never replaces the error
that matters.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
import uuid
from types import TracebackType
from typing import Any

from genbatch.errors import StorageError
from genbatch.io import storage
from genbatch.run.layout import RunLayout

log = logging.getLogger(__name__)



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
