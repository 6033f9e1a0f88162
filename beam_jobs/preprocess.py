"""Preprocess pipeline: normalise, dedupe, estimate cost, cut balanced shards.

Reads ``validation/accepted.jsonl`` of a prepared run and writes ``shards/shard-*.jsonl``,
``rejects/part-preprocess-00000.jsonl`` (duplicates) and ``shards/_plan.json``.

    python -m beam_jobs.preprocess --run-dir runs/<run_id> [--runner=DataflowRunner ...]

Without ``--runner`` it runs in-process on Beam's FnApiRunner (the engine behind the
DirectRunner), which needs no network (the DirectRunner would first try to fetch Prism).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.records import PlanSettings, lpt_assignment, shard_lines, split_duplicates, to_item
from genbatch import storage
from genbatch.layout import RunLayout
from genbatch.run_state import load_run_state

log = logging.getLogger(__name__)


class WriteShard(beam.DoFn):
    """Write one shard file create-only (a retried bundle rewrites identical bytes: a no-op)."""

    def __init__(self, layout: RunLayout, num_shards: int) -> None:
        self.layout = layout
        self.num_shards = num_shards

    def process(self, element: tuple[int, Iterable[dict[str, Any]]]) -> Iterable[dict[str, Any]]:
        shard, items = element
        items = list(items)
        storage.write_bytes(self.layout.shard_input(shard, self.num_shards), shard_lines(items))
        yield {"shard": shard, "items": len(items), "est_cost": sum(it["est_cost"] for it in items)}


def write_rejects(layout: RunLayout, rejects: list[dict[str, Any]]) -> None:
    ordered = sorted(rejects, key=lambda r: r["index"])
    body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in ordered)
    storage.write_bytes(layout.rejects_part("preprocess"), body.encode())


def write_plan(layout: RunLayout, num_shards: int, shard_stats: list[dict[str, Any]], max_item_cost: float) -> None:
    """Plan summary; empty shards still get an (empty) file so every mapped task has input."""
    by_shard = {s["shard"]: s for s in shard_stats}
    for shard in range(num_shards):
        if shard not in by_shard:
            storage.write_bytes(layout.shard_input(shard, num_shards), b"")
            by_shard[shard] = {"shard": shard, "items": 0, "est_cost": 0.0}
    loads = [by_shard[s]["est_cost"] for s in range(num_shards)]
    total = sum(loads)
    lower_bound = max(total / num_shards, max_item_cost) if total else 0.0
    plan = {
        "num_shards": num_shards,
        "shards": [by_shard[s] for s in range(num_shards)],
        "items": sum(by_shard[s]["items"] for s in range(num_shards)),
        "est_cost_total": total,
        "makespan_ratio": (max(loads) / lower_bound) if lower_bound else 1.0,
    }
    storage.write_json(layout.shard_plan, plan)


def build(p: beam.Pipeline, run_dir: str) -> None:
    state = load_run_state(run_dir)
    layout = state.layout
    gen = state.spec.generation
    settings = PlanSettings(state.spec.task, gen.seed, gen.max_new_tokens, gen.num_inference_steps)
    n = state.num_shards

    items = (
        p
        | "ReadAccepted" >> beam.io.ReadFromText(layout.validation_accepted)
        | "Parse" >> beam.Map(json.loads)
        | "ToItem" >> beam.Map(to_item, settings)
    )
    grouped = items | "KeyById" >> beam.Map(lambda it: (it["id"], it)) | "GroupById" >> beam.GroupByKey()
    deduped = grouped | "SplitDuplicates" >> beam.MapTuple(lambda k, v: split_duplicates(k, list(v)))
    unique = deduped | "Keep" >> beam.Map(lambda kd: kd[0])
    rejects = deduped | "Rejects" >> beam.FlatMap(lambda kd: kd[1])

    costs = unique | "Cost" >> beam.Map(lambda it: (it["id"], it["est_cost"])) | "AllCosts" >> beam.combiners.ToList()
    plan = costs | "LPT" >> beam.Map(lpt_assignment, n)
    max_cost = unique | "MaxCost" >> beam.Map(lambda it: it["est_cost"]) | beam.CombineGlobally(max).without_defaults()

    shard_stats = (
        unique
        | "Assign" >> beam.Map(lambda it, a: (a[it["id"]], it), beam.pvalue.AsSingleton(plan))
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(layout, n))
        | "AllStats" >> beam.combiners.ToList()
    )
    _ = (
        rejects
        | "AllRejects" >> beam.combiners.ToList()
        | "WriteRejects" >> beam.Map(lambda rs: write_rejects(layout, rs))
    )
    _ = shard_stats | "WritePlan" >> beam.Map(
        lambda stats, mc: write_plan(layout, n, stats, mc[0] if mc else 0.0),
        beam.pvalue.AsList(max_cost),
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Run the pipeline to completion and return the shard plan."""
    parser = argparse.ArgumentParser(prog="beam_jobs.preprocess")
    parser.add_argument("--run-dir", required=True)
    known, beam_args = parser.parse_known_args(argv)
    if test_pipeline is not None:
        pipeline = test_pipeline
    else:
        options = PipelineOptions(beam_args)
        runner: Any = None
        if not any(a.startswith("--runner") for a in beam_args):
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            runner = FnApiRunner()
        pipeline = beam.Pipeline(runner=runner, options=options)
    with pipeline as p:
        build(p, known.run_dir)
    return dict(storage.read_json(RunLayout(known.run_dir).shard_plan))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(json.dumps(run()))
