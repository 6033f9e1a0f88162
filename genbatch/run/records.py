"""Reading the JSONL record sets of a run (rejects, outputs, errors) in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from genbatch.io import storage
from genbatch.run.layout import RunLayout


def jsonl_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """The one JSONL encoding of every record file (sorted keys, UTF-8): rewrites read like originals."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records).encode()


def iter_jsonl(uri: str) -> Iterator[dict[str, Any]]:
    """The records of one JSONL object, lazily, blank lines skipped."""
    for line in storage.iter_lines(uri):
        if line.strip():
            yield json.loads(line)


def _files(prefix: str, name_prefix: str) -> list[str]:
    if not storage.exists(prefix) and not storage.list_uris(prefix):
        return []
    return [u for u in storage.list_uris(prefix)
            if u.rsplit("/", 1)[-1].startswith(name_prefix) and u.endswith(".jsonl")]


def reject_files(layout: RunLayout) -> list[str]:
    """The run's reject parts (``rejects/part-*.jsonl``), of every stage."""
    return _files(layout.rejects_dir, "part-")


def reject_row_index(rec: Mapping[str, Any]) -> int:
    """The input row number a reject record accounts for: its ``row_index``.

    Runs written under contract version 1 named it ``index``; falling back to that key keeps those
    runs reconciling, erasable and retainable. Every reader of reject records goes through here.
    """
    return int(rec["row_index"] if "row_index" in rec else rec["index"])


def output_files(layout: RunLayout, num_shards: int) -> list[str]:
    """The output parts of every shard (``part-*.jsonl``, fan-out copies included; error parts are not)."""
    return [u for s in range(num_shards) for u in _files(layout.outputs_dir(s), "part-")]


def error_files(layout: RunLayout, num_shards: int) -> list[str]:
    """The merged per-shard error files that exist (``errors/shard-K.jsonl``)."""
    return [layout.errors_file(s) for s in range(num_shards) if storage.exists(layout.errors_file(s))]


def iter_many(uris: list[str]) -> Iterator[dict[str, Any]]:
    """The records of several JSONL objects, one object after the other."""
    for uri in uris:
        yield from iter_jsonl(uri)
