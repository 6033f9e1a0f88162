"""bench/process_gc.py's measured process: its hooks report collections and the exit for both legs."""

from __future__ import annotations

from pathlib import Path

from bench.process_gc import one
from genbatch.cli.process import YOUNG_COLLECTION_THRESHOLD


def test_each_leg_reports_its_collections_and_its_exit(tmp_path: Path) -> None:
    tuned = one("tuned", ["spec-schema"], "tuned", tmp_path)
    defaults = one("defaults", ["spec-schema"], "defaults", tmp_path)
    for got in (tuned, defaults):
        assert got["wall_s"] > got["exit_s"] >= 0
        assert len(got["collections"]) == len(got["gc_s_by_generation"]) == 3
    # CPython collects its youngest generation every 700 allocations; the tuned leg every 10,000: the same
    # command gives the tuned leg fewer young collections (the hook sees the setting take effect).
    assert YOUNG_COLLECTION_THRESHOLD > 700
    assert tuned["collections"][0] < defaults["collections"][0]
