"""The output contract a consumer reads (docs/output-contract.md): its version, file kinds, markers, schemas.

A published run is read through ``manifest.json`` only. Each of its file entries has a ``kind`` (below),
so a consumer picks the files it wants by kind and never globs; the JSONL kinds also carry their
record count. ``_SUCCESS`` vouches for the manifest (its sha256 and the contract version); ``_FAILED``
says a run ended failed (which task, why, when). The JSON Schemas under ``genbatch/run/schemas/`` are
shipped with the package and describe every record a consumer reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

from genbatch.run.layout import (
    ATTEMPTS_DIR,
    ERRORS_FILE_RE,
    FANOUT_ERRORS,
    FANOUT_PART,
    IN_SHARD_RE,
    MANIFESTS_PREFIX,
    OPERATOR_DIRS,
    REJECTS_PART_PREFIX,
    REPORT,
    SHARD_FANOUT,
    SHARD_FILE_RE,
    SHARD_INPUT_RE,
    SHARD_MANIFEST,
    SHARD_PLAN,
    SPEC,
)

CONTRACT_VERSION = 2
"""1: runs before the contract was written down (empty ``_SUCCESS``, rejects keyed ``index``, no kinds)."""

RECORD_KINDS = ("output", "error", "reject")
"""Kinds whose JSONL records a consumer counts: their ``records`` add up to the manifest's counts."""

SCHEMAS = ("manifest", "success", "failed", "output_text", "output_image", "error", "reject")

_FIXED_KINDS = {SPEC: "spec", REPORT: "report", SHARD_PLAN: "plan", SHARD_FANOUT: "fanout",
                "quality/summary.json": "quality", "quality/canary.json": "quality",
                "quality/metrics.parquet": "metrics", "quality/data_docs.html": "report",
                "validation/data_docs.html": "report",
                # output.format openai_batch: views of the records in the OpenAI Batch shapes (not counted twice)
                "openai/output.jsonl": "openai_output", "openai/errors.jsonl": "openai_errors"}
_PREFIX_KINDS: tuple[tuple[str, str], ...] = (
    (REJECTS_PART_PREFIX, "reject"), ("validation/", "validation"), (ATTEMPTS_DIR, "attempt"),
    (MANIFESTS_PREFIX, "manifest"), *((d, "operator") for d in OPERATOR_DIRS))


def file_kind(rel: str) -> str:
    """The ``kind`` of a file of a run, from its path relative to the run root (``other`` when unknown)."""
    if rel in _FIXED_KINDS:
        return _FIXED_KINDS[rel]
    shard_file = SHARD_FILE_RE.match(rel)
    if shard_file:
        return _shard_file_kind(shard_file.group(2))
    if ERRORS_FILE_RE.match(rel):
        return "error"
    if SHARD_INPUT_RE.match(rel):
        return "shard_input"
    return next((kind for prefix, kind in _PREFIX_KINDS if rel.startswith(prefix) and rel.endswith(
        ".jsonl" if kind == "reject" else "")), "other")


def _shard_file_kind(name: str) -> str:
    """The kind of a file of a shard's outputs dir, by the layout's own name patterns."""
    if name in (FANOUT_PART, FANOUT_ERRORS):
        return "output" if name == FANOUT_PART else "error"
    match = IN_SHARD_RE.match(name)
    if match is None:
        return "other"
    if match.group(1):  # a committed batch: its records, or its errors (merged into errors/ at commit)
        return "output" if match.group(1) == "part" else "error_batch"
    if match.group(2) is not None:
        return "image"
    return "shard_manifest" if name == SHARD_MANIFEST else "metrics"


def count_records(data: bytes) -> int:
    """Records of a JSONL object: its non-blank lines."""
    return sum(1 for line in data.split(b"\n") if line.strip())


def file_entry(rel: str, data: bytes) -> dict[str, Any]:
    """One ``files`` entry of manifest.json: path, kind, bytes, sha256, and ``records`` for the JSONL kinds."""
    kind = file_kind(rel)
    entry: dict[str, Any] = {"path": rel, "kind": kind, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if kind in RECORD_KINDS or kind == "error_batch":
        entry["records"] = count_records(data)
    return entry


def success_marker(run_id: str, manifest_data: bytes, generation: int, published_at: str) -> dict[str, Any]:
    """``_SUCCESS``: the contract version and the sha256 of the manifest generation it vouches for."""
    return {"contract_version": CONTRACT_VERSION, "run_id": run_id, "manifest": "manifest.json",
            "manifest_sha256": hashlib.sha256(manifest_data).hexdigest(), "manifest_generation": generation,
            "published_at": published_at}


def failed_marker(run_id: str, task: str, reason: str, *, try_number: int | None = None,
                  airflow_run_id: str | None = None) -> dict[str, Any]:
    """``_FAILED``: which task ended the run failed, why (redacted by the caller) and when."""
    return {"contract_version": CONTRACT_VERSION, "run_id": run_id, "failed_task": task, "reason": reason,
            "failed_at": now_iso(), "try_number": try_number, "airflow_run_id": airflow_run_id}


def now_iso() -> str:
    """UTC now, ISO 8601 (every timestamp of the contract)."""
    return dt.datetime.now(dt.UTC).isoformat()


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``name`` (one of :data:`SCHEMAS`), as shipped in ``genbatch/run/schemas/``."""
    if name not in SCHEMAS:
        raise KeyError(f"no contract schema {name!r}; there are {', '.join(SCHEMAS)}")
    text = resources.files("genbatch.run").joinpath("schemas", f"{name}.schema.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


_RECORD_SCHEMAS = {"error": "error", "error_batch": "error", "reject": "reject"}


def record_schema(kind: str, task: str) -> str:
    """Which schema the records of a file of ``kind`` follow in a run of ``task`` (text or image)."""
    if kind == "output":
        return f"output_{task}"
    if kind not in _RECORD_SCHEMAS:
        raise KeyError(f"files of kind {kind!r} hold no records of the contract")
    return _RECORD_SCHEMAS[kind]


def success_problem(success_data: bytes, manifest_data: bytes) -> str | None:
    """Why ``_SUCCESS`` does not vouch for this manifest.json, or None when it does.

    An empty ``_SUCCESS`` is a contract-version-1 run: it vouches for nothing, and is accepted.
    """
    if not success_data.strip():
        return None
    try:
        marker = json.loads(success_data)
        expected = str(marker["manifest_sha256"])
    except (ValueError, KeyError, TypeError):
        return "_SUCCESS is not the contract's JSON marker (no manifest_sha256); the run dir was altered"
    actual = hashlib.sha256(manifest_data).hexdigest()
    if actual != expected:
        return (f"manifest.json has sha256 {actual[:12]}…, but _SUCCESS vouches for {expected[:12]}… (generation "
                f"{marker.get('manifest_generation')}); the manifest was changed or is being rewritten")
    return None
