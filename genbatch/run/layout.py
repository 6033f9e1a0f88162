"""The run layout (DESIGN.md §3): the one module that knows where a run's objects live.

Every name derives from (run_id, shard, part), so a retried task rewrites the same objects
and create-only writes make the retry idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from genbatch.io.storage import join


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run, rooted at ``<output>/<run_id>``."""

    root: str

    @classmethod
    def for_run(cls, output_uri: str, run_id: str) -> RunLayout:
        return cls(join(output_uri, run_id))

    def path(self, *parts: str) -> str:
        return join(self.root, *parts)

    # -- run level ------------------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.path("spec.json")

    @property
    def validation_report(self) -> str:
        return self.path("validation", "input.json")

    @property
    def validation_accepted(self) -> str:
        """Rows that passed validation, the input of the Beam stage (one JSON object a line)."""
        return self.path("validation", "accepted.jsonl")

    @property
    def rejects_dir(self) -> str:
        return self.path("rejects")

    def rejects_part(self, stage: str, part: int = 0) -> str:
        return self.path("rejects", f"part-{stage}-{part:05d}.jsonl")

    @property
    def shards_dir(self) -> str:
        return self.path("shards")

    @property
    def shard_plan(self) -> str:
        """Summary of the sharding (counts, estimated cost per shard, balance)."""
        return self.path("shards", "_plan.json")

    @property
    def shard_fanout(self) -> str:
        """``sharding.dedupe_identical``: one line per fanned-out row, with the row it is generated as."""
        return self.path("shards", "_fanout.jsonl")

    def shard_input(self, shard: int, num_shards: int) -> str:
        return self.path("shards", f"{shard_name(shard, num_shards)}.jsonl")

    # -- per shard outputs ---------------------------------------------------------
    def outputs_dir(self, shard: int) -> str:
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
        return join(self.outputs_dir(shard), "images", f"{item_id}.png")

    def shard_manifest(self, shard: int) -> str:
        """Written last by the worker: the shard's commit point."""
        return join(self.outputs_dir(shard), "_manifest.json")

    def errors_file(self, shard: int) -> str:
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
    def quality_metrics(self) -> str:
        return self.path("quality", "metrics.parquet")

    @property
    def quality_summary(self) -> str:
        return self.path("quality", "summary.json")

    @property
    def report_html(self) -> str:
        return self.path("report.html")

    @property
    def manifest(self) -> str:
        return self.path("manifest.json")

    @property
    def success(self) -> str:
        return self.path("_SUCCESS")
