"""Small statistics shared by promotion and canary comparisons."""

from __future__ import annotations

import random

BOOTSTRAP_RESAMPLES = 2000


def bootstrap_diff(a: list[float], b: list[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(b) - mean(a), resampling each arm independently."""
    if not a or not b:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        ma = sum(rng.choices(a, k=len(a))) / len(a)
        mb = sum(rng.choices(b, k=len(b))) / len(b)
        diffs.append(mb - ma)
    diffs.sort()
    return diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1]


def bootstrap_paired_diff(pairs: list[tuple[float, float]], *, seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """95% percentile bootstrap interval of mean(b - a) over items both arms scored.

    Where both arms ran on the same items (a golden set), resampling items keeps each pair together:
    the item-to-item spread cancels and the interval is the right, narrower one.
    """
    if not pairs:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    deltas = [b - a for a, b in pairs]
    diffs = sorted(sum(rng.choices(deltas, k=len(deltas))) / len(deltas) for _ in range(resamples))
    return diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1]


def mean(values: list[float]) -> float:
    """Arithmetic mean; NaN for an empty list, so an empty arm shows as missing instead of raising."""
    return sum(values) / len(values) if values else float("nan")
