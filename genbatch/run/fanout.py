"""Fan-out of identical items (``sharding.dedupe_identical``): generated once, published for every id.

The preprocess stage writes ``shards/_fanout.jsonl`` (one line per fanned-out row, naming its canonical row
and the shard that generates it). At publish time :func:`materialise` gives every fanned-out id its
canonical's result in the canonical's shard dir (``part-fanout.jsonl``, ``errors-fanout.jsonl``), written
create-only with deterministic bytes, so a retried publish rewrites identical objects.

Record formats, consumers and reconcile: docs/internals.md#genbatchrunfanout
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run.layout import RunLayout
from genbatch.run.records import iter_jsonl, jsonl_bytes

log = logging.getLogger(__name__)

def read_fanout(layout: RunLayout) -> list[dict[str, Any]]:
    """The fan-out records of a run ([] when the run does not dedupe or has no identical items)."""
    uri = layout.shard_fanout
    return list(iter_jsonl(uri)) if storage.exists(uri) else []


def _copy(record: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    return {**record, "id": entry["id"], "row_index": entry["row_index"], "metadata": entry.get("metadata") or {},
            "fanout_of": entry["canonical_id"]}


def _canonical_records(layout: RunLayout, shard: int, wanted: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs, errors) of shard ``shard`` for the canonical ids in ``wanted``, read through its manifest."""
    manifest = storage.read_json(layout.shard_manifest(shard))
    outputs: dict[str, Any] = {}
    for part in manifest.get("parts", []):
        for record in iter_jsonl(layout.path(str(part["path"]))):
            if record["id"] in wanted:
                outputs[record["id"]] = record
    errors: dict[str, Any] = {}
    if storage.exists(layout.errors_file(shard)):
        errors = {r["id"]: r for r in iter_jsonl(layout.errors_file(shard)) if r["id"] in wanted}
    return outputs, errors


def materialise(layout: RunLayout) -> dict[str, int]:
    """Write every fanned-out row's output (or error) copy; returns ``{"outputs": n, "errors": m}``.

    Needs every shard that holds a canonical item committed (its shard manifest). Idempotent.
    """
    by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entry in read_fanout(layout):
        by_shard[int(entry["shard"])].append(entry)
    written = {"outputs": 0, "errors": 0}
    for shard in sorted(by_shard):
        entries = sorted(by_shard[shard], key=lambda e: int(e["row_index"]))
        outputs, errors = _canonical_records(layout, shard, {e["canonical_id"] for e in entries})
        out_lines, err_lines = [], []
        for entry in entries:
            canonical = entry["canonical_id"]
            if canonical in outputs:
                out_lines.append(_copy(outputs[canonical], entry))
            elif canonical in errors:
                err_lines.append(_copy(errors[canonical], entry))
            else:
                raise GenbatchError(
                    f"{layout.root}: row {entry['row_index']} (id {entry['id']!r}) is fanned out from "
                    f"{canonical!r} in shard {shard}, which has neither an output nor an error for it; "
                    "rerun that shard's generate task, then publish again")
        if out_lines:
            storage.write_bytes(layout.fanout_part(shard), jsonl_bytes(out_lines))
        if err_lines:
            storage.write_bytes(layout.fanout_errors(shard), jsonl_bytes(err_lines))
        written["outputs"] += len(out_lines)
        written["errors"] += len(err_lines)
    if by_shard:
        log.info("run dir %s: fanned out %s outputs and %s errors", layout.root, written["outputs"], written["errors"])
    return written
