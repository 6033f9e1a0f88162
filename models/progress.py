"""Progress lines for Airflow task logs: done/total, rates and ETA every few seconds."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Logs at most once per ``interval_s``; ``total`` may be unknown (None)."""

    def __init__(self, label: str, total: int | None, unit: str, interval_s: float | None = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.interval_s = interval_s if interval_s is not None else float(os.environ.get("GENBATCH_PROGRESS_INTERVAL_S", "10"))
        self.start = time.monotonic()
        self.last = self.start
        self.done = 0
        self.units = 0

    def update(self, items: int, units: int) -> None:
        self.done += items
        self.units += units
        now = time.monotonic()
        if now - self.last >= self.interval_s:
            self.last = now
            log.info("%s", self.line(now), extra=self.fields(now))

    def fields(self, now: float | None = None) -> dict[str, float | int | None]:
        """The same figures as structured fields (JSON logs, see genbatch.ops.logs)."""
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        return {"items_done": self.done, "items_total": self.total, "items_per_s": round(self.done / elapsed, 3),
                f"{self.unit}_per_s": round(self.units / elapsed, 3)}

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done}"
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text += f"/{self.total} items ({pct:.0f}%), {rate:.1f} items/s, {self.units / elapsed:.1f} {self.unit}/s, "
            text += f"ETA {_fmt_duration(eta) if eta != float('inf') else '?'}"
        else:
            text += f" items, {rate:.1f} items/s, {self.units / elapsed:.1f} {self.unit}/s"
        return text
