"""Preprocess pipeline: normalise, count tokens, dedupe, estimate cost, cut balanced shards.

Reads ``validation/accepted.jsonl`` of a prepared run and writes ``shards/shard-*.jsonl``
(items sorted by token length inside each shard), ``rejects/part-preprocess-00000.jsonl``
(``prompt_over_token_budget`` and ``duplicate_id``), ``shards/_fanout.jsonl`` (only with
``sharding.dedupe_identical``) and, last, ``shards/_plan.json`` (the preprocess manifest).

    python -m beam_jobs.preprocess --run-dir runs/<run_id> [--token-counts=auto] [--runner=DataflowRunner ...]
    python -m beam_jobs.preprocess --run-dir runs/<run_id> --input 'gs://bucket/in/*.jsonl.gz' [--input_format=auto]

With ``--input`` the job reads the raw input itself (JSONL, CSV, Parquet; globs; gzip) and applies
the row rules of the ``validate_input`` stage (:mod:`beam_jobs.raw_input`): row-rule rejects join
``rejects/part-preprocess-00000.jsonl`` and the job writes ``validation/input.json`` (row counts,
rejects by rule) itself; the rest is the same.

Without ``--runner`` (or with ``--runner=FnApiRunner``) it runs in-process on Beam's FnApiRunner (the engine behind the
DirectRunner), which needs no network (the DirectRunner would first try to fetch Prism).

Memory stays flat with input size: the input is read twice and never grouped.

1. *Measure* (streaming): parse each accepted row, count its prompt tokens with the model's
   tokenizer, reject prompts over the token budget, and write one fixed-size record per row
   (row index, id digest, tokens, cost) to binary temp files.
2. *Plan* (one worker, numpy): dedupe ids (first row index wins), optionally group identical
   items, LPT over the costs; a few arrays indexed by row index, read as a side input.
3. *Route* (streaming): read the input again; each row becomes a shard item, a duplicate_id
   reject or a fan-out record, as a keyed line for an external merge sort
   (:mod:`beam_jobs.sorted_files`): sorted runs per bundle, then one streaming k-way merge per
   output file, published create-only.
4. *Commit*: check every file's line count against the plan, delete the temp prefix, write
   ``shards/_plan.json``. A rerun rewrites byte-identical files, which create-only accepts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import GlobalWindows

from beam_jobs import plan as planning
from beam_jobs import raw_input
from beam_jobs import tokens as tokenizing
from beam_jobs.records import (
    RULE_DUPLICATE_ID,
    RULE_TOKEN_BUDGET,
    PlanSettings,
    budget_reject,
    content_digest,
    duplicate_reject,
    id_digest,
    index_sort_key,
    item_cost,
    item_params,
    keyed_line,
    max_new_tokens_of,
    normalised_prompt,
    row_metadata,
    shard_sort_key,
    to_item,
)
from beam_jobs.sorted_files import SPILL_BYTES, SpillSortedRuns, delete_prefix, merge_runs, write_empty
from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.quality.expectations import InputSchemaError
from genbatch.run.inputs import read_input_files
from genbatch.run.items import estimate_prompt_tokens
from genbatch.run.layout import RunLayout, shard_name
from genbatch.run.row_shape import RowShape
from genbatch.run.state import load_run_state
from genbatch.stages.generate import EXIT_PERMANENT

log = logging.getLogger(__name__)

REJECTS = "rejects"
FANOUT = "fanout"
FANOUT_CANONICAL = "fanout_canonical"
FANOUT_DUPLICATE = "fanout_duplicate"
PLAN_SCHEMA_VERSION = 2
IN_PROCESS_RUNNER_FLAGS = ("--runner=FnApiRunner", "--runner=fnapirunner")


# --- paths (the run layout owns the rest) ------------------------------------------------------


def preprocess_tmp(layout: RunLayout) -> str:
    """Temp prefix of this stage (record files, sorted runs, the plan arrays); deleted at commit."""
    return layout.preprocess_tmp


def dest_uri(layout: RunLayout, num_shards: int, dest: str) -> str:
    if dest == REJECTS:
        return layout.rejects_part("preprocess")
    if dest == FANOUT:
        return layout.shard_fanout
    return layout.shard_input(int(dest.rsplit("-", 3)[1]), num_shards)


def shard_dest(shard: int, num_shards: int) -> str:
    return shard_name(shard, num_shards)


# --- step 1: measure -------------------------------------------------------------------------------


class Measure(beam.DoFn):
    """Parse, count tokens (tokenizer loaded once per DoFn), token-budget rejects, plan records."""

    def __init__(self, settings: PlanSettings, info: tokenizing.TokenizerInfo, tmp_dir: str) -> None:
        self.settings = settings
        self.info = info
        self.tmp_dir = tmp_dir
        self.counter: tokenizing.TokenCounter | None = None
        self.buffer: planning.RecordBuffer | None = None

    def setup(self) -> None:
        self.counter = tokenizing.load_token_counter(self.settings.task, self.info)

    def start_bundle(self) -> None:
        self.buffer = planning.RecordBuffer(self.tmp_dir, self.settings.dedupe_identical)

    def process(self, line: str | dict[str, Any]) -> Iterator[Any]:
        assert self.buffer is not None
        accepted = json.loads(line) if isinstance(line, str) else line
        row, index = accepted["row"], int(accepted["index"])
        prompt = normalised_prompt(row)
        params = item_params(row)
        if self.counter is None:
            tokens = estimate_prompt_tokens(prompt)
        else:
            messages = row.get("messages")
            tokens = self.counter.count_chat(messages) if messages else self.counter.count(prompt)
            max_new = max_new_tokens_of(params, self.settings)
            budget = self.counter.budget(max_new)
            if budget is not None and tokens > budget:
                reject = budget_reject(accepted, tokens, budget, int(self.info.context_length or 0), max_new)
                yield beam.pvalue.TaggedOutput(REJECTS, (REJECTS, keyed_line(index_sort_key(index), reject)))
                return
        content = content_digest(row, self.settings) if self.settings.dedupe_identical else None
        written = self.buffer.add(index, id_digest(row["id"]), tokens, item_cost(self.settings, tokens, params), content)
        if written is not None:
            yield written

    def finish_bundle(self) -> Iterator[Any]:
        assert self.buffer is not None
        written = self.buffer.flush()
        if written is not None:
            yield GlobalWindows.windowed_value(written)

    def teardown(self) -> None:
        if self.counter is not None:
            self.counter.close()


# --- step 2: plan ----------------------------------------------------------------------------------


def make_plan(files: list[tuple[str, int]], tmp_dir: str, num_shards: int, with_content: bool) -> dict[str, Any]:
    records = planning.load_records(files, with_content)
    plan, stats = planning.build_plan(records, num_shards, with_content)
    del records
    uri = storage.join(tmp_dir, f"plan-{uuid.uuid4().hex}.npz")
    storage.write_bytes(uri, plan.to_bytes())
    return {"plan_uri": uri, "stats": stats}


# --- step 3: route ---------------------------------------------------------------------------------


class Route(beam.DoFn):
    """Every accepted row once more: to its shard, to duplicate_id rejects, or to fan-out."""

    def __init__(self, settings: PlanSettings, num_shards: int) -> None:
        self.settings = settings
        self.num_shards = num_shards
        self._plan_uri: str | None = None
        self._plan: planning.Plan | None = None

    def _load(self, uri: str) -> planning.Plan:
        if self._plan is None or self._plan_uri != uri:
            self._plan = planning.Plan.from_bytes(storage.read_bytes(uri))
            self._plan_uri = uri
        return self._plan

    def process(self, line: str | dict[str, Any], plan_info: dict[str, Any]) -> Iterator[Any]:
        plan = self._load(plan_info["plan_uri"])
        accepted = json.loads(line) if isinstance(line, str) else line
        index = int(accepted["index"])
        route = plan.route_of(index)
        if route >= 0:
            item = to_item(accepted, self.settings, tokens=plan.tokens_of(index))
            yield shard_dest(route, self.num_shards), keyed_line(shard_sort_key(item), item)
            if self.settings.dedupe_identical and plan.is_canonical(index):
                yield beam.pvalue.TaggedOutput(FANOUT_CANONICAL, (index, {"id": item["id"], "shard": route}))
        elif route == planning.DUPLICATE:
            reject = duplicate_reject(accepted, plan.kept_row(index))
            yield REJECTS, keyed_line(index_sort_key(index), reject)
        elif route == planning.FANOUT:
            yield beam.pvalue.TaggedOutput(
                FANOUT_DUPLICATE, (plan.kept_row(index), {"id": accepted["row"]["id"], "row_index": index,
                                                          "metadata": row_metadata(accepted["row"])})
            )
        # NOT_ROUTED: a token-budget reject, already written by Measure.


def join_fanout(element: tuple[int, dict[str, list[dict[str, Any]]]]) -> Iterator[tuple[str, str]]:
    canonical_index, grouped = element
    (canonical,) = grouped["canonical"]
    for dup in grouped["duplicates"]:
        record = {
            "id": dup["id"],
            "row_index": dup["row_index"],
            "canonical_id": canonical["id"],
            "canonical_row_index": canonical_index,
            "shard": canonical["shard"],
            "metadata": dup["metadata"],
        }
        yield FANOUT, keyed_line(index_sort_key(dup["row_index"]), record)


def merge_dest(element: tuple[str, Any], layout: RunLayout, num_shards: int) -> dict[str, Any]:
    dest, runs = element
    return {"dest": dest, **merge_runs(list(runs), dest_uri(layout, num_shards, dest))}


# --- step 4: commit --------------------------------------------------------------------------------


def _checked(layout: RunLayout, num_shards: int, dest: str, merged: dict[str, dict[str, Any]], expected: int) -> dict[str, Any]:
    uri = dest_uri(layout, num_shards, dest)
    written = merged.get(dest) or write_empty(uri)
    if written["lines"] != expected:
        raise GenbatchError(
            f"preprocess of {layout.root}: {uri} got {written['lines']} lines but the plan has {expected}; "
            "this is a genbatch bug (or a concurrent writer of the same run): report it with the run dir"
        )
    return written


@dataclass(frozen=True)
class RawInput:
    """``--input``: the pattern, and what the commit checks over the whole input (spec ``input``)."""

    pattern: str
    run_id: str
    min_rows: int
    max_rows: int | None
    max_reject_fraction: float


def commit_input(layout: RunLayout, raw: RawInput, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """``--input``: write ``validation/input.json`` and stop the run on the input-level failures that
    ``validate_input`` stops on (row bounds, nothing readable, too many rejects)."""
    report = {"run_id": raw.run_id, **raw_input.input_report(raw.pattern, summaries), "failure": None,
              "validated_by": "beam_jobs.preprocess (genbatch.quality.expectations row rules, batches of "
                              f"{raw_input.VALIDATE_ROWS} rows)"}
    if storage.exists(layout.validation_sample):  # input.row_rules=pipeline: the table checks validate_input ran
        report["great_expectations"] = {
            "rows": {"input": report["rows"]["input"], "rejects_by_rule": report["rejects_by_rule"]},
            "sample": storage.read_json(layout.validation_sample)["great_expectations"],
        }
    rows, rejected = report["rows"]["input"], report["rows"]["rejected"]
    if not raw.min_rows <= rows <= (raw.max_rows or rows):
        report["failure"] = (f"input {raw.pattern} has {rows} rows, outside the expected {raw.min_rows}.."
                             f"{raw.max_rows or 'unbounded'}; check the input or the row bounds in the run spec")
    elif report["rejects_by_rule"].get("parse_error", 0) == rows:
        report["failure"] = (f"no row of {raw.pattern} could be read ({rows} rows, all parse errors); check the "
                             "format (JSONL, CSV with a header, Parquet) and that the files are UTF-8")
    elif rejected / rows > raw.max_reject_fraction:
        report["failure"] = (f"{rejected} of {rows} rows of {raw.pattern} were rejected ({rejected / rows:.1%}), over "
                             f"max_reject_fraction={raw.max_reject_fraction}; fix the input (see the rejects) or raise "
                             "max_reject_fraction in the run spec")
    storage.write_json(layout.validation_report, report)
    if report["failure"]:
        raise InputSchemaError(report["failure"], report=report)
    return report


def commit(_: Any, layout: RunLayout, num_shards: int, settings: PlanSettings, info: tokenizing.TokenizerInfo,
           plan_info: dict[str, Any], merged_list: list[dict[str, Any]], budget_rejects: int,
           raw: RawInput | None = None, summaries: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Check counts, write empty outputs, delete temp files, then ``shards/_plan.json`` (written last)."""
    stats = plan_info["stats"]
    merged = {m["dest"]: m for m in merged_list}
    report = raw_input.input_report(raw.pattern, summaries or []) if raw is not None else None
    invalid = report["rows"]["rejected"] if report is not None else 0
    shards = []
    for entry in stats["shards"]:
        written = _checked(layout, num_shards, shard_dest(entry["shard"], num_shards), merged, entry["items"])
        shards.append({**entry, "bytes": written["bytes"], "sha256": written["sha256"]})
    _checked(layout, num_shards, REJECTS, merged, invalid + budget_rejects + stats["duplicate_ids"])
    if settings.dedupe_identical:
        _checked(layout, num_shards, FANOUT, merged, stats["fanned_out"])
    deleted = delete_prefix(preprocess_tmp(layout))
    storage.remove_empty_dirs(layout.tmp_dir)  # the emptied parent too
    log.info("preprocess of %s: deleted %s temp objects", layout.root, deleted)
    if raw is not None:
        commit_input(layout, raw, summaries or [])
    rejects_by_rule = {RULE_DUPLICATE_ID: stats["duplicate_ids"], RULE_TOKEN_BUDGET: budget_rejects,
                       **(report["rejects_by_rule"] if report is not None else {})}
    input_rows = {"input": report["rows"]["input"], "invalid": invalid} if report is not None else {}
    plan = {
        "schema_version": PLAN_SCHEMA_VERSION,
        "num_shards": num_shards,
        "shards": shards,
        "items": stats["items"],
        "est_cost_total": stats["est_cost_total"],
        "max_item_cost": stats["max_item_cost"],
        "makespan_ratio": stats["makespan_ratio"],
        "rows": {
            **input_rows,
            "accepted": stats["rows_planned"] + budget_rejects,
            "sharded": stats["items"],
            "rejected": budget_rejects + stats["duplicate_ids"],
            "fanned_out": stats["fanned_out"],
        },
        "rejects_by_rule": dict(sorted(rejects_by_rule.items())),
        "tokens": info.to_json(),
        "cost_model": "steps*height*width" if settings.task == "image" else "prompt_tokens+max_new_tokens",
        "order_inside_shard": ["est_tokens", "id"],
        "dedupe_identical": settings.dedupe_identical,
        "fanout": layout.shard_fanout.rsplit("/", 1)[-1] if settings.dedupe_identical else None,
        **({"input": raw.pattern} if raw is not None else {}),
    }
    storage.write_json(layout.shard_plan, plan)
    return plan


# --- the pipeline ----------------------------------------------------------------------------------


def judged_uri(summary: dict[str, Any]) -> str:
    return str(summary["uri"])


def build(p: beam.Pipeline, run_dir: str, token_counts: str = "auto", spill_bytes: int = SPILL_BYTES,
          input_uri: str | None = None, input_format: str = "auto") -> None:
    state = load_run_state(run_dir)
    layout = state.layout
    gen = state.spec.generation
    dedupe_identical = bool(getattr(state.spec.sharding, "dedupe_identical", False))
    settings = PlanSettings(state.spec.task, gen.seed, gen.max_new_tokens, gen.num_inference_steps,
                            gen.height, gen.width, dedupe_identical)
    info = tokenizing.inspect(state.model.uri, state.spec.task, token_counts)
    n = state.num_shards
    tmp = preprocess_tmp(layout)

    # 0. The accepted rows: validation/accepted.jsonl, or (--input) the raw input read and judged here.
    raw: RawInput | None = None
    spills: list[Any] = []
    pinned = input_uri is None and state.spec.input.row_rules == "pipeline"
    if input_uri is None and not pinned:
        ingested = p | "NoRawInput" >> beam.Create([])
        rows_for_plan = p | "ReadForPlan" >> beam.io.ReadFromText(layout.validation_accepted)
        rows_for_shards = p | "ReadForShards" >> beam.io.ReadFromText(layout.validation_accepted)
    else:
        spec_input = state.spec.input
        raw = RawInput(input_uri or spec_input.uri, state.run_id, spec_input.min_rows, spec_input.max_rows,
                       spec_input.max_reject_fraction)
        # input.row_rules=pipeline: the files prepare pinned (validation/input_files.json), never a new match.
        files = (raw_input.pinned_input(read_input_files(layout, spec_input)) if pinned
                 else raw_input.match_input(input_uri or "", input_format))
        ingested = (
            p
            | "InputFiles" >> beam.Create(files)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Ingest" >> beam.ParDo(raw_input.IngestFile(tmp, raw_input.RowRules(
                spec_input.max_prompt_chars,
                RowShape.of(spec_input, chat_template=state.model.chat_template_sha256 is not None))))
        )
        judged = ingested | "JudgedFiles" >> beam.Map(judged_uri)
        offsets = beam.pvalue.AsList(ingested)
        for_plan = (
            judged
            | "ReadJudgedForPlan" >> beam.io.ReadAllFromText(with_filename=True)
            | "IndexForPlan" >> beam.ParDo(raw_input.ToAccepted(emit_rejects=True), offsets).with_outputs(
                raw_input.ToAccepted.REJECTS, main="rows")
        )
        rows_for_plan = for_plan["rows"]
        spills.append(for_plan[raw_input.ToAccepted.REJECTS]
                      | "SpillInputRejects" >> beam.ParDo(SpillSortedRuns(tmp, spill_bytes)))
        rows_for_shards = (
            judged
            | "ReadJudgedForShards" >> beam.io.ReadAllFromText(with_filename=True)
            | "IndexForShards" >> beam.ParDo(raw_input.ToAccepted(emit_rejects=False), offsets)
        )

    # 1. Measure: tokens, the token budget, fixed-size plan records.
    measured = rows_for_plan | "Measure" >> beam.ParDo(Measure(settings, info, tmp)).with_outputs(
        REJECTS, main="records")
    budget_rejects = measured[REJECTS]
    budget_count = budget_rejects | "CountBudgetRejects" >> beam.combiners.Count.Globally()

    # 2. Plan: one worker, fixed-size records only.
    plan_info = (
        measured["records"]
        | "RecordFiles" >> beam.combiners.ToList()
        | "Plan" >> beam.Map(make_plan, tmp, n, dedupe_identical)
    )

    # 3. Route every row by the plan; keyed lines go to bounded-memory sorted runs.
    routed = (
        rows_for_shards
        | "Route" >> beam.ParDo(Route(settings, n), beam.pvalue.AsSingleton(plan_info)).with_outputs(
            FANOUT_CANONICAL, FANOUT_DUPLICATE, main="lines"
        )
    )
    runs = [
        routed["lines"] | "SpillRouted" >> beam.ParDo(SpillSortedRuns(tmp, spill_bytes)),
        budget_rejects | "SpillBudgetRejects" >> beam.ParDo(SpillSortedRuns(tmp, spill_bytes)),
        *spills,
    ]
    if dedupe_identical:
        fanout_lines = (
            {"canonical": routed[FANOUT_CANONICAL], "duplicates": routed[FANOUT_DUPLICATE]}
            | "JoinFanout" >> beam.CoGroupByKey()
            | "FanoutLines" >> beam.FlatMap(join_fanout)
        )
        runs.append(fanout_lines | "SpillFanout" >> beam.ParDo(SpillSortedRuns(tmp, spill_bytes)))
    merged = (
        tuple(runs)
        | "AllRuns" >> beam.Flatten()
        | "RunsByFile" >> beam.GroupByKey()
        | "Merge" >> beam.Map(merge_dest, layout, n)
    )

    # 4. Commit: counts checked, temp files deleted, _plan.json last.
    _ = (
        p
        | "CommitOnce" >> beam.Create([None])
        | "Commit" >> beam.Map(
            commit, layout, n, settings, info,
            beam.pvalue.AsSingleton(plan_info), beam.pvalue.AsList(merged), beam.pvalue.AsSingleton(budget_count),
            raw, beam.pvalue.AsList(ingested),
        )
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Run the pipeline to completion and return the shard plan."""
    parser = argparse.ArgumentParser(prog="beam_jobs.preprocess")
    parser.add_argument("--run-dir", "--run_dir", dest="run_dir", required=True)
    parser.add_argument(
        "--token-counts", "--token_counts", dest="token_counts", choices=tokenizing.TOKEN_MODES, default="auto",
        help="tokenizer: count with the model's tokenizer (required); estimate: 4 characters a token, "
             "no token budget; auto (default): the tokenizer when the model version has one",
    )
    parser.add_argument(
        "--spill-bytes", "--spill_bytes", dest="spill_bytes", type=int, default=SPILL_BYTES,
        help=f"characters of output lines a bundle buffers before it spills a sorted run (default {SPILL_BYTES})",
    )
    parser.add_argument(
        "--input", dest="input_uri", default=None, metavar="URI_OR_GLOB",
        help="read the raw input here (JSONL, CSV or Parquet; local or gs://; globs; .gz) and apply the row rules "
             "in this job, instead of reading validation/accepted.jsonl of the validate_input stage",
    )
    parser.add_argument(
        "--input-format", "--input_format", dest="input_format", choices=raw_input.INPUT_FORMATS, default="auto",
        help="format of every --input file; auto (default): from each file's extension (under .gz etc.)",
    )
    known, beam_args = parser.parse_known_args(argv)
    if test_pipeline is not None:
        pipeline = test_pipeline
    else:
        runner: Any = None
        runner_args = [a for a in beam_args if a.startswith("--runner")]
        if not runner_args or runner_args[-1] in IN_PROCESS_RUNNER_FLAGS:
            # In-process FnApiRunner (no network). It reads direct_num_workers/direct_running_mode.
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            beam_args = [a for a in beam_args if not a.startswith("--runner")]
            runner = FnApiRunner()
        pipeline = beam.Pipeline(runner=runner, options=PipelineOptions(beam_args))
    with pipeline as p:
        build(p, known.run_dir, known.token_counts, known.spill_bytes, known.input_uri, known.input_format)
    if PipelineOptions(beam_args).view_as(StandardOptions).no_wait_until_finish:
        # Submitted only (Dataflow from Airflow): the caller waits for the job, then reads the plan.
        return {"submitted": True, "run_dir": known.run_dir}
    return dict(storage.read_json(RunLayout(known.run_dir).shard_plan))


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    try:
        print(json.dumps(run()))
    except GenbatchError as exc:  # the runner keeps the type (its message gains "[while running 'Step']")
        print(f"genbatch preprocess: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PERMANENT)  # bad input or spec: a retry reads the same


if __name__ == "__main__":
    # Build the pipeline from the importable module, not from ``__main__``: workers then unpickle
    # ``beam_jobs.preprocess.Measure`` by reference instead of needing this file's main session.
    # As a whole process: the collector set for a short-lived one (genbatch.cli.process).
    from beam_jobs.preprocess import main as _main
    from genbatch.cli.process import run_as_process

    run_as_process(_main)
