"""Streaming, length-bucketed batching.

Items are read as a stream; only one window is held in memory. Sorting by length inside a
window cuts padding without a global sort (which would need the whole shard in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    window: list[T] = []
    for item in items:
        window.append(item)
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


def bucketed_batches(
    items: Iterable[T],
    *,
    batch_size: int,
    length: Callable[[T], int],
    group: Callable[[T], str] = lambda _: "",
    window_batches: int = 8,
) -> Iterator[list[T]]:
    """Yield batches of at most ``batch_size`` items, similar lengths together.

    ``group`` keeps items with different generation params apart (they cannot share a
    ``generate`` call). Memory is bounded by ``batch_size * window_batches`` items.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for window in windows(items, batch_size * window_batches):
        groups: dict[str, list[T]] = {}
        for item in window:
            groups.setdefault(group(item), []).append(item)
        for key in sorted(groups):
            ordered = sorted(groups[key], key=length)
            for start in range(0, len(ordered), batch_size):
                yield ordered[start : start + batch_size]
