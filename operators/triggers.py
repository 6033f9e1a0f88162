"""ArrivalTrigger: watch a local or gs:// prefix for new input batches, in the triggerer.

It runs inside an ``AssetWatcher`` (Airflow 3 event-driven scheduling): no worker slot is held while
it waits. Each new batch (genbatch.schedule.arrivals) fires one event with its URI, version and key.
Batches already announced are remembered in the watched asset's state store, which outlives
triggerer restarts, so the same object version never fires twice; the events DAG also names each
run after the key, so even a repeat could not start a second run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from genbatch.errors import GenbatchError

log = logging.getLogger(__name__)
SEEN_PREFIX = "seen:"


class ArrivalTrigger(BaseEventTrigger):
    """Fires ``{"uri", "version", "key"}`` once per new batch under ``prefix`` (see find_arrivals)."""

    def __init__(self, *, prefix: str, pattern: str = "*.jsonl", ready_marker: str | None = None,
                 poll_s: float = 30.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.pattern = pattern
        self.ready_marker = ready_marker
        self.poll_s = poll_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"prefix": self.prefix, "pattern": self.pattern, "ready_marker": self.ready_marker,
                 "poll_s": self.poll_s})

    async def _seen(self, key: str) -> bool:
        if self.asset_state_store is None:  # run outside an AssetWatcher (tests): memory only
            return False
        return await self.asset_state_store.aget(SEEN_PREFIX + key) is not None

    async def _remember(self, key: str, uri: str) -> None:
        if self.asset_state_store is not None:
            await self.asset_state_store.aset(SEEN_PREFIX + key, uri)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from genbatch.schedule.arrivals import find_arrivals

        fired: set[str] = set()
        while True:
            try:
                arrivals = await asyncio.to_thread(find_arrivals, self.prefix, pattern=self.pattern,
                                                   ready_marker=self.ready_marker)
            except GenbatchError as exc:  # a storage hiccup (StorageError) must not end the watch: retry next poll
                log.warning("listing %s failed (%s); retrying in %.0f s", self.prefix, exc, self.poll_s)
                arrivals = []
            for arrival in arrivals:
                if arrival.key in fired or await self._seen(arrival.key):
                    fired.add(arrival.key)
                    continue
                # At least once: the event goes out before the ledger entry, and the run id (from the key)
                # makes a repeat after a crash in between a no-op.
                yield TriggerEvent(arrival.payload())
                fired.add(arrival.key)
                await self._remember(arrival.key, arrival.uri)
            await asyncio.sleep(self.poll_s)
