"""bench.overhead's pure helpers: interval union, gaps, per-task and total overhead figures."""

from __future__ import annotations

import datetime as dt

import pytest

from bench.overhead import (
    TaskRecord,
    compute_per_task,
    gaps,
    max_overlap,
    overhead_figures,
    summarise,
    to_epoch,
    union_length,
)

UP = {"a": [], "b": ["a"], "g": ["b"], "c": ["g"]}


def rec(task: str, start: float, end: float, map_index: int = -1, state: str = "success",
        queued: float | None = None) -> TaskRecord:
    return TaskRecord(task, map_index, state, start, end, queued)


def test_to_epoch_reads_rest_strings_and_datetimes() -> None:
    when = dt.datetime(2026, 11, 26, 12, 0, 1, 500000, tzinfo=dt.UTC)
    assert to_epoch("2026-11-26T12:00:01.500000Z") == when.timestamp()
    assert to_epoch("2026-11-26T13:00:01.500000+01:00") == when.timestamp()
    assert to_epoch(when) == when.timestamp()
    assert to_epoch(None) is None and to_epoch("") is None


def test_union_length_counts_overlaps_once() -> None:
    assert union_length([]) == 0.0
    assert union_length([(0, 1), (2, 3)]) == 2.0
    assert union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4.0
    assert union_length([(3, 1)]) == 0.0  # empty intervals ignored


def test_max_overlap() -> None:
    assert max_overlap([]) == 0
    assert max_overlap([(0, 1), (1, 2)]) == 1  # back to back
    assert max_overlap([(0, 3), (1, 2), (1.5, 4), (5, 6)]) == 3


def test_gaps_from_trigger_upstream_and_freed_slots() -> None:
    records = [rec("a", 1.0, 2.0), rec("b", 2.5, 3.0),
               # two shards at once, a third waits for a slot freed at 5.0 and starts at 5.25
               rec("g", 3.5, 5.0, 0), rec("g", 3.6, 6.0, 1), rec("g", 5.25, 7.0, 2),
               rec("k", 3.1, 3.1, state="skipped"), rec("c", 7.5, 8.0)]
    got = gaps(records, {**UP, "c": ["g", "k"]}, trigger=0.0)
    assert got == pytest.approx({"a": 1.0, "b": 0.5, "g[0]": 0.4, "g[1]": 0.5, "g[2]": 0.25, "c": 0.5})


def test_overhead_figures_sequential_run() -> None:
    records = [rec("a", 1.0, 2.0, queued=0.5), rec("b", 2.5, 4.5), rec("g", 5.0, 8.0, 0), rec("c", 8.5, 9.0)]
    compute = {"a": 0.5, "b": 2.0, "g[0]": 2.5, "c": 0.25}
    fig = overhead_figures(records, UP, compute, trigger=0.0, done=10.0)
    assert fig["tasks"]["a"] == {"gap_s": 1.0, "queued_to_start_s": 0.5, "duration_s": 1.0, "compute_s": 0.5,
                                 "overhead_s": 1.5}
    assert fig["tasks"]["g[0]"]["overhead_s"] == 1.0 and fig["tasks"]["b"]["queued_to_start_s"] is None
    t = fig["totals"]
    assert t["wall_s"] == 10.0 and t["compute_sum_s"] == 5.25 and t["compute_busy_s"] == 5.25
    assert t["overhead_s"] == 4.75 and t["overhead_fraction"] == 0.475
    assert t["tail_s"] == 1.0 and t["gaps_s"] == 3.5  # 1 + 0.5 + 0.5 + 0.5 + tail 1
    # sequential: gaps + in-task overhead + tail = the total overhead exactly
    assert t["gaps_s"] + t["in_task_overhead_s"] == pytest.approx(t["overhead_s"])


def test_overhead_figures_parallel_shards_count_compute_once() -> None:
    records = [rec("g", 0.0, 4.0, 0), rec("g", 0.0, 4.0, 1)]
    fig = overhead_figures(records, UP, {"g[0]": 3.0, "g[1]": 3.0}, trigger=0.0, done=4.0)
    assert fig["totals"]["compute_sum_s"] == 6.0
    assert fig["totals"]["compute_busy_s"] == 3.0 and fig["totals"]["overhead_s"] == 1.0
    assert fig["totals"]["max_concurrent_shards"] == 0.0  # tasks named "g", not generate_local


def test_compute_per_task_uses_the_runs_own_worker_record_plus_launch() -> None:
    direct = {"a": 0.5, "g[0]": 6.0}
    got = compute_per_task(direct, {"g[0]": {"wall_s": 4.0}}, {"g[0]": {"wall_s": 3.0, "compute_s": 1.0}})
    assert got == {"a": 0.5, "g[0]": 5.0}


def test_summarise_takes_medians_over_repetitions() -> None:
    runs = [overhead_figures([rec("a", 1.0, 2.0)], UP, {"a": 0.5}, 0.0, wall) for wall in (3.0, 5.0, 4.0)]
    s = summarise(runs)
    assert s["totals"]["wall_s"] == {"median": 4.0, "min": 3.0, "max": 5.0}
    assert s["tasks"]["a"]["overhead_s"] == 1.5 and s["tasks"]["a"]["queued_to_start_s"] is None


def test_max_concurrent_shards_counts_generate_instances() -> None:
    records = [rec("generate_local", 0.0, 4.0, k) for k in range(4)] + [rec("a", 0.0, 4.0)]
    fig = overhead_figures(records, UP, {}, trigger=0.0, done=5.0)
    assert fig["totals"]["max_concurrent_shards"] == 4.0  # four shards at once: the device pool did not bound them
