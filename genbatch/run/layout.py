"""The run layout (DESIGN.md §3): the one module that knows where a run's objects live and how they are named.

Every name derives from (run_id, shard, part), so a retried task rewrites the same objects and
create-only writes make the retry idempotent. The patterns below match those names relative to the
run root, for code that lists a run dir (reconcile, the consumer reader, the worker's resume scan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import overload

from genbatch.io import storage
from genbatch.io.storage import join

# Names relative to the run root.
SPEC, MANIFEST, SUCCESS, FAILED, REPORT = "spec.json", "manifest.json", "_SUCCESS", "_FAILED", "report.html"
SHARD_PLAN, SHARD_FANOUT = "shards/_plan.json", "shards/_fanout.jsonl"
ROOT_FILES = frozenset({SPEC, MANIFEST, SUCCESS, FAILED, REPORT})
MARKERS = frozenset({MANIFEST, SUCCESS, FAILED})  # what manifest.json cannot list: itself and the markers
MANIFESTS_DIR = "_manifests"  # earlier generations of manifest.json, kept when erasure or retention rewrites it
MANIFESTS_PREFIX = f"{MANIFESTS_DIR}/"
STAGE_DIRS = ("validation/", "quality/", "openai/")  # artefacts of those stages (openai/: publish's OpenAI views)
ERASURES_DIR, RETENTION_DIR = "_erasures", "_retention"  # records `genbatch erase` and retention keep at a root
OPERATOR_DIRS = (f"{ERASURES_DIR}/", f"{RETENTION_DIR}/")
ATTEMPTS_DIR = "attempts/"
REJECTS_PART_PREFIX = "rejects/part-"
FANOUT_PART, FANOUT_ERRORS = "part-fanout.jsonl", "errors-fanout.jsonl"  # in a shard's outputs dir
SHARD_MANIFEST = "_manifest.json"  # a shard's commit point, in its outputs dir
ATTEMPT_SUFFIXES = {"start": ".json", "end": ".end.json", "batches": ".batches.jsonl"}
INPUT_DOCS = ("validation/accepted.jsonl", "validation/data_docs.html", REPORT)  # carry input text

# Patterns of the names, relative to the run root unless said otherwise.
SHARD_INPUT_RE = re.compile(r"^shards/shard-(\d{5})-of-(\d{5})\.jsonl$")
SHARD_FILE_RE = re.compile(r"^outputs/shard-(\d{5})/(.+)$")  # any file of a shard's outputs
IN_SHARD_RE = re.compile(  # relative to the shard's outputs dir: part, errors, metrics, manifest, image
    r"^(?:(part|errors)-r\d{2}-\d{5}\.jsonl|metrics-r\d{2}\.prom|_manifest\.json|images/([^/]+)\.png)$")
PART_NAME_RE = re.compile(r"^(part|errors)-r(\d+)-(\d+)\.jsonl$")  # a file name: kind, rank, part number
OUTPUT_PART_RE = re.compile(r"^outputs/shard-\d+/part-[^/]+\.jsonl$")  # output records, not images or metrics
SHARD_DIR_RE = re.compile(r"shard-(\d+)/")  # searched in a path: the shard a file belongs to
ERRORS_FILE_RE = re.compile(r"^errors/shard-(\d{5})\.jsonl$")
ATTEMPT_RECORD_RE = re.compile(
    r"^attempts/shard-(\d{5})/r(\d{2})-(\d{8}T\d{12}Z-[0-9a-f]{8})(\.end\.json|\.batches\.jsonl|\.json)$")


def listed_in_manifest(rel: str) -> bool:
    """Whether manifest.json lists the run object ``rel``: everything but itself, the markers and its kept
    earlier generations (history, scrubbed by erasure: their bytes may change)."""
    return rel not in MARKERS and not rel.startswith(MANIFESTS_PREFIX)


def is_rejects_part(uri: str, stage: str | None = None) -> bool:
    """Whether ``uri`` names a rejects part (``rejects/part-<stage>-NNNNN.jsonl``), of ``stage`` when given."""
    return uri.rsplit("/", 1)[-1].startswith(f"part-{stage}-" if stage else "part-")


def is_record_part(uri: str) -> bool:
    """Whether ``uri`` names a JSONL file of a shard's records: a committed batch (``part-rRR-NNNNN.jsonl``,
    ``errors-...``) or the fan-out copies (``part-fanout.jsonl``, ``errors-fanout.jsonl``)."""
    name = uri.rsplit("/", 1)[-1]
    return name.startswith(("part-", "errors-")) and name.endswith(".jsonl")


def find_run_dirs(prefix: str, marker: str = SPEC, *, depth: int | None = None, skip_hidden: bool = False) -> list[str]:
    """Run dirs under ``prefix``, found by their ``marker`` (``spec.json``: every run; ``manifest.json``: the
    published ones); ``prefix`` itself when it is one. ``depth``: only run dirs that many levels down;
    ``skip_hidden``: not under a folder named ``_*`` or ``.*`` (operator records, temp space)."""
    root = prefix.rstrip("/") or prefix
    if storage.exists(join(root, marker)):
        return [root]
    listed_root = join(root)  # the root as listings spell it (a local ./runs is listed as runs/...)
    runs = []
    for uri in storage.list_uris(root):
        if not uri.endswith("/" + marker):
            continue
        run_dir = uri[: -len(marker) - 1]
        parent = run_dir[len(listed_root):].strip("/")
        if not parent or (depth is not None and parent.count("/") + 1 != depth):
            continue
        if skip_hidden and any(part.startswith(("_", ".")) for part in parent.split("/")):
            continue
        runs.append(run_dir)
    return sorted(runs)


def is_batch_part(uri: str) -> bool:
    """Whether ``uri`` names an output batch the worker committed (``part-rRR-NNNNN.jsonl``): what a shard
    manifest lists, unlike the fan-out copies publish adds beside them."""
    match = PART_NAME_RE.match(uri.rsplit("/", 1)[-1])
    return match is not None and match.group(1) == "part"


def erasure_record(root: str, erasure_id: str) -> str:
    """The record `genbatch erase` keeps at a root (counts only, no personal data)."""
    return join(root, ERASURES_DIR, f"{erasure_id}.json")


def retention_record(root: str, stamp: str, run_id: str | None = None) -> str:
    """What a retention apply did at a root (``<stamp>.json``), or plans for one run (``<stamp>/<run_id>.json``)."""
    return join(root, RETENTION_DIR, stamp, f"{run_id}.json") if run_id else join(root, RETENTION_DIR, f"{stamp}.json")


def shard_name(shard: int, num_shards: int) -> str:
    """``shard-00001-of-00004``: the name of a shard's input file."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


class _RunPath:
    """A fixed path under the run root, read as an attribute of a :class:`RunLayout`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    @overload
    def __get__(self, layout: None, owner: type[RunLayout]) -> _RunPath: ...

    @overload
    def __get__(self, layout: RunLayout, owner: type[RunLayout] | None = None) -> str: ...

    def __get__(self, layout: RunLayout | None, owner: type[RunLayout] | None = None) -> str | _RunPath:
        return self if layout is None else layout.path(*self.parts)


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run, rooted at ``<output>/<run_id>``."""

    root: str

    @classmethod
    def for_run(cls, output_uri: str, run_id: str) -> RunLayout:
        """The layout of run ``run_id`` under ``output_uri``."""
        return cls(join(output_uri, run_id))

    def path(self, *parts: str) -> str:
        """A URI under the run root."""
        return join(self.root, *parts)

    def rel(self, uri: str) -> str:
        """``uri`` relative to the run root (what the patterns above match)."""
        return uri[len(self.root):].lstrip("/")

    # -- fixed paths: attribute = parts under the run root ------------------------------
    spec = _RunPath(SPEC)  # the resolved spec (genbatch.run.state), written once by prepare
    validation_dir = _RunPath("validation")  # input validation's objects and the prepare-time decisions
    validation_report = _RunPath("validation", "input.json")  # counts; retention records what it stripped
    validation_accepted = _RunPath("validation", "accepted.jsonl")  # rows that passed, the Beam stage's input
    validation_docs = _RunPath("validation", "data_docs.html")  # GX Data Docs of the input suite
    validation_sample = _RunPath("validation", "sample.json")  # input.row_rules=pipeline: GX results of a sample
    input_files = _RunPath("validation", "input_files.json")  # the input's files, pinned by prepare (sorted)
    auto_shards = _RunPath("validation", "auto_shards.json")  # how `num_shards: auto` was decided
    cost_preflight = _RunPath("validation", "cost.json")  # the estimate cost_check made before generation
    tmp_dir = _RunPath("_tmp")  # scratch space of the stages, empty once they commit
    preprocess_tmp = _RunPath("_tmp", "preprocess")  # Beam's scratch space
    rejects_dir = _RunPath("rejects")  # the reject parts of every stage
    shards_dir = _RunPath("shards")  # shard input files, the plan and the fan-out list
    shard_plan = _RunPath(SHARD_PLAN)  # counts, estimated cost per shard, balance
    shard_fanout = _RunPath(SHARD_FANOUT)  # sharding.dedupe_identical: each fanned-out row and its canonical
    quality_dir = _RunPath("quality")  # metrics, summary, Data Docs, canary verdict
    quality_metrics = _RunPath("quality", "metrics.parquet")  # per-item metrics, one row per output
    quality_summary = _RunPath("quality", "summary.json")  # run-level metrics and gate verdicts
    quality_docs = _RunPath("quality", "data_docs.html")  # GX Data Docs of the quality gates
    canary_verdict = _RunPath("quality", "canary.json")  # the canary's A/B verdict
    report_html = _RunPath(REPORT)  # the human-readable quality report
    manifest = _RunPath(MANIFEST)  # written by publish: counts, shards, quality, cost, every file's sha256
    success = _RunPath(SUCCESS)  # written last: consumers wait for it; holds the manifest's sha256
    failed = _RunPath(FAILED)  # written when the run ends failed (task, reason, time); gone once it publishes

    # -- names with a shard, part or stage in them ------------------------------------
    def rejects_part(self, stage: str, part: int = 0) -> str:
        """A reject part written by ``stage`` (``validate``, ``preprocess``, erasure tombstones)."""
        return self.path("rejects", f"part-{stage}-{part:05d}.jsonl")

    def shard_input(self, shard: int, num_shards: int) -> str:
        """The items of one shard as preprocessing wrote them (one JSON object a line)."""
        return self.path("shards", f"{shard_name(shard, num_shards)}.jsonl")

    def outputs_dir(self, shard: int) -> str:
        """Directory of one shard's output and error parts, images, worker metrics and shard manifest."""
        return self.path("outputs", f"shard-{shard:05d}")

    def output_part(self, shard: int, part: int, rank: int = 0) -> str:
        """One committed batch; ``rank`` is the device process that wrote it (one per GPU)."""
        return join(self.outputs_dir(shard), f"part-r{rank:02d}-{part:05d}.jsonl")

    def error_part(self, shard: int, part: int, rank: int = 0) -> str:
        """Per-batch error records, merged into ``errors/shard-K.jsonl`` when the shard commits."""
        return join(self.outputs_dir(shard), f"errors-r{rank:02d}-{part:05d}.jsonl")

    def worker_metrics(self, shard: int, rank: int = 0) -> str:
        """Prometheus text exposition of one device process."""
        return join(self.outputs_dir(shard), f"metrics-r{rank:02d}.prom")

    def image_path(self, shard: int, item_id: str) -> str:
        """The PNG of one image item, in its shard's outputs dir, named by the item id."""
        return join(self.outputs_dir(shard), "images", f"{item_id}.png")

    def fanout_part(self, shard: int) -> str:
        """``sharding.dedupe_identical``: the fanned-out ids' copies of their canonical's output records."""
        return join(self.outputs_dir(shard), FANOUT_PART)

    def fanout_errors(self, shard: int) -> str:
        """The fanned-out ids' copies of their canonical's error records."""
        return join(self.outputs_dir(shard), FANOUT_ERRORS)

    def shard_manifest(self, shard: int) -> str:
        """Written last by the worker: the shard's commit point."""
        return join(self.outputs_dir(shard), SHARD_MANIFEST)

    def errors_file(self, shard: int) -> str:
        """One shard's error records, merged from its per-batch error parts when the shard commits."""
        return self.path("errors", f"shard-{shard:05d}.jsonl")

    def manifest_generation(self, generation: int) -> str:
        """An earlier ``manifest.json``, kept create-only when erasure or retention wrote generation + 1."""
        return self.path(MANIFESTS_DIR, f"manifest-g{generation:05d}.json")

    # -- per-attempt records (models/attempts.py) -------------------------------------
    def attempts_dir(self, shard: int) -> str:
        """One start record per worker process that ran on the shard, and how it ended."""
        return self.path("attempts", f"shard-{shard:05d}")

    def attempt_record(self, shard: int, rank: int, attempt_id: str, kind: str = "start") -> str:
        """``kind``: ``start`` (create-only, written when the attempt starts), ``end`` (create-only,
        written when it exits, absent when it was killed) or ``batches`` (the batch in flight)."""
        suffix = ATTEMPT_SUFFIXES[kind]
        return join(self.attempts_dir(shard), f"r{rank:02d}-{attempt_id}{suffix}")
