"""The run layout (DESIGN.md §3): the one module that knows where a run's objects live and how they are named.

Every name derives from (run_id, shard, part), so a retried task rewrites the same objects and
create-only writes make the retry idempotent. The patterns below match those names relative to the
run root, for code that lists a run dir (reconcile, the consumer reader, the worker's resume scan).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genbatch.io.storage import join

# Names relative to the run root.
SPEC, MANIFEST, SUCCESS, REPORT = "spec.json", "manifest.json", "_SUCCESS", "report.html"
SHARD_PLAN, SHARD_FANOUT = "shards/_plan.json", "shards/_fanout.jsonl"
ROOT_FILES = frozenset({SPEC, MANIFEST, SUCCESS, REPORT})
STAGE_DIRS = ("validation/", "quality/")  # report artefacts of those stages: any file in them is theirs
ERASURES_DIR, RETENTION_DIR = "_erasures", "_retention"  # records `genbatch erase` and retention keep at a root
OPERATOR_DIRS = (f"{ERASURES_DIR}/", f"{RETENTION_DIR}/")
ATTEMPTS_DIR = "attempts/"
REJECTS_PART_PREFIX = "rejects/part-"
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


def is_rejects_part(uri: str, stage: str | None = None) -> bool:
    """Whether ``uri`` names a rejects part (``rejects/part-<stage>-NNNNN.jsonl``), of ``stage`` when given."""
    return uri.rsplit("/", 1)[-1].startswith(f"part-{stage}-" if stage else "part-")


def is_record_part(uri: str, kinds: tuple[str, ...] = ("part", "errors")) -> bool:
    """Whether ``uri`` names a committed batch of a shard: output records (``part``) or error records."""
    match = PART_NAME_RE.match(uri.rsplit("/", 1)[-1])
    return match is not None and match.group(1) in kinds


def shard_name(shard: int, num_shards: int) -> str:
    """``shard-00001-of-00004``: the name of a shard's input file."""
    return f"shard-{shard:05d}-of-{num_shards:05d}"


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

    # -- run level ------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """The resolved spec (genbatch.run.state), written once by prepare."""
        return self.path(SPEC)

    @property
    def validation_dir(self) -> str:
        """Directory of input validation's objects (report, accepted rows, Data Docs) and the prepare-time decisions."""
        return self.path("validation")

    @property
    def validation_docs(self) -> str:
        """Great Expectations Data Docs of the input suite."""
        return self.path("validation", "data_docs.html")

    @property
    def auto_shards(self) -> str:
        """How ``num_shards: auto`` was decided."""
        return self.path("validation", "auto_shards.json")

    @property
    def cost_preflight(self) -> str:
        """The cost estimate made before generation (cost_check)."""
        return self.path("validation", "cost.json")

    @property
    def tmp_dir(self) -> str:
        """Scratch space of the stages, empty once they commit."""
        return self.path("_tmp")

    @property
    def preprocess_tmp(self) -> str:
        """Beam's scratch space, removed when preprocessing commits."""
        return join(self.tmp_dir, "preprocess")

    @property
    def validation_report(self) -> str:
        """The input validation report (counts; retention records there what it stripped)."""
        return self.path("validation", "input.json")

    @property
    def validation_accepted(self) -> str:
        """Rows that passed validation, the input of the Beam stage (one JSON object a line)."""
        return self.path("validation", "accepted.jsonl")

    @property
    def rejects_dir(self) -> str:
        """Directory of the reject parts of every stage."""
        return self.path("rejects")

    def rejects_part(self, stage: str, part: int = 0) -> str:
        """A reject part written by ``stage`` (``validate``, ``preprocess``, erasure tombstones)."""
        return self.path("rejects", f"part-{stage}-{part:05d}.jsonl")

    @property
    def shards_dir(self) -> str:
        """Directory of the shard input files, the shard plan and the fan-out list."""
        return self.path("shards")

    @property
    def shard_plan(self) -> str:
        """Summary of the sharding (counts, estimated cost per shard, balance)."""
        return self.path(SHARD_PLAN)

    @property
    def shard_fanout(self) -> str:
        """``sharding.dedupe_identical``: one line per fanned-out row, with the row it is generated as."""
        return self.path(SHARD_FANOUT)

    def shard_input(self, shard: int, num_shards: int) -> str:
        """The items of one shard as preprocessing wrote them (one JSON object a line)."""
        return self.path("shards", f"{shard_name(shard, num_shards)}.jsonl")

    # -- per shard outputs ---------------------------------------------------------
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

    def shard_manifest(self, shard: int) -> str:
        """Written last by the worker: the shard's commit point."""
        return join(self.outputs_dir(shard), "_manifest.json")

    def errors_file(self, shard: int) -> str:
        """One shard's error records, merged from its per-batch error parts when the shard commits."""
        return self.path("errors", f"shard-{shard:05d}.jsonl")

    # -- per-attempt records (models/attempts.py) -------------------------------------
    def attempts_dir(self, shard: int) -> str:
        """One start record per worker process that ran on the shard, and how it ended."""
        return self.path("attempts", f"shard-{shard:05d}")

    def attempt_record(self, shard: int, rank: int, attempt_id: str, kind: str = "start") -> str:
        """``kind``: ``start`` (create-only, written when the attempt starts), ``end`` (create-only,
        written when it exits, absent when it was killed) or ``batches`` (the batch in flight)."""
        suffix = {"start": ".json", "end": ".end.json", "batches": ".batches.jsonl"}[kind]
        return join(self.attempts_dir(shard), f"r{rank:02d}-{attempt_id}{suffix}")

    # -- quality and publication -----------------------------------------------------
    @property
    def quality_dir(self) -> str:
        """Directory of the quality stage's objects (metrics, summary, Data Docs, canary verdict)."""
        return self.path("quality")

    @property
    def quality_metrics(self) -> str:
        """Per-item quality metrics, one row per output."""
        return self.path("quality", "metrics.parquet")

    @property
    def quality_docs(self) -> str:
        """Great Expectations Data Docs of the quality gates."""
        return self.path("quality", "data_docs.html")

    @property
    def canary_verdict(self) -> str:
        """The canary's A/B verdict (genbatch.quality.canary)."""
        return self.path("quality", "canary.json")

    @property
    def quality_summary(self) -> str:
        """Run-level quality metrics and gate verdicts; publish reads from it whether the run may publish."""
        return self.path("quality", "summary.json")

    @property
    def report_html(self) -> str:
        """The run's human-readable quality report."""
        return self.path(REPORT)

    @property
    def manifest(self) -> str:
        """``manifest.json``, written by publish: counts, shards, quality, cost and every file's bytes and sha256."""
        return self.path(MANIFEST)

    @property
    def success(self) -> str:
        """Written last: consumers wait for it."""
        return self.path(SUCCESS)
