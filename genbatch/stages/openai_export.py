"""``output.format: openai_batch``: the run's records again, as the OpenAI Batch API's output and error files.

Tools built for the big batch APIs (and vLLM's ``run-batch``) read ``openai/output.jsonl`` (one line per
generated item: ``custom_id`` and a ``response`` whose body is a chat completion or a completion) and
``openai/errors.jsonl`` (one line per rejected or failed row: ``custom_id`` and an ``error`` with the rule
or the generation error as its ``code``). Every ``custom_id`` of the input is in exactly one of them; rows
with no usable ``custom_id`` appear with ``custom_id: null``. Written at publish, before the manifest lists
them, from the record files the counts reconcile over, in path order, so a retried publish writes the same
bytes (create-only holds). genbatch's own records stay the contract; these files are a view of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.records import iter_jsonl
from genbatch.run.row_shape import OPENAI_META
from genbatch.run.state import RunState

OUTPUT = "openai/output.jsonl"
ERRORS = "openai/errors.jsonl"
_CHAT_URL = "/v1/chat/completions"


def export(state: RunState) -> dict[str, int]:
    """Write both files from the run's output, error and reject records; returns the lines of each."""
    layout = state.layout
    created = _created(state)
    lines = {"output": 0, "errors": 0}
    with tempfile.TemporaryDirectory(prefix="genbatch-openai-") as tmp:
        out_path, err_path = os.path.join(tmp, "output.jsonl"), os.path.join(tmp, "errors.jsonl")
        with open(out_path, "w", encoding="utf-8") as out, open(err_path, "w", encoding="utf-8") as err:
            for kind, record in _records(state):
                if kind == "output":
                    _write(out, output_line(state, record, created))
                    lines["output"] += 1
                else:
                    _write(err, error_line(state, kind, record))
                    lines["errors"] += 1
        storage.upload_file(out_path, layout.path(OUTPUT), content_type="application/jsonl")
        storage.upload_file(err_path, layout.path(ERRORS), content_type="application/jsonl")
    return lines


def _records(state: RunState) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, record) of every output, error and reject record, files in path order."""
    layout = state.layout
    for uri in storage.list_uris(layout.root):
        kind = contract.file_kind(layout.rel(uri))  # the kinds the counts reconcile over, fan-out files included
        if kind in contract.RECORD_KINDS:
            for record in iter_jsonl(uri):
                yield kind, record


def _write(stream: TextIO, line: dict[str, Any]) -> None:
    stream.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")


def _created(state: RunState) -> int:
    """The run's creation time (spec.json), as the Unix seconds OpenAI's ``created`` holds: fixed per run."""
    stamp = storage.read_json(state.layout.spec).get("created_at")
    return int(dt.datetime.fromisoformat(stamp).timestamp()) if isinstance(stamp, str) else 0


def _request_id(state: RunState, item_id: str | None, row_index: Any) -> str:
    digest = hashlib.sha256(f"{state.run_id}:{item_id}:{row_index}".encode()).hexdigest()[:24]
    return f"batch_req_{digest}"


def output_line(state: RunState, record: dict[str, Any], created: int) -> dict[str, Any]:
    """One output file line: the item's text as a chat completion or a completion, by the request's url."""
    meta = record.get("metadata") or {}
    request = meta.get(OPENAI_META) or {}
    max_tokens = request.get("max_tokens") or state.spec.generation.max_new_tokens
    new_tokens = int(record.get("new_tokens") or 0)
    finish = "length" if new_tokens >= int(max_tokens) else "stop"
    text = record.get("output", "")
    request_id = _request_id(state, record["id"], record.get("row_index"))
    model = f"{state.model.name}@{record.get('model_version', state.model.version)}"
    if request.get("url") == _CHAT_URL:
        body: dict[str, Any] = {
            "id": f"chatcmpl-{request_id[10:]}", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}]}
    else:
        body = {"id": f"cmpl-{request_id[10:]}", "object": "text_completion",
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
    body.update({"created": created, "model": model, "usage": {"completion_tokens": new_tokens}})
    return {"id": request_id, "custom_id": record["id"], "error": None,
            "response": {"status_code": 200, "request_id": request_id, "body": body}}


def error_line(state: RunState, kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """One error file line: a reject (its rule as the code) or a generation error."""
    item_id = record.get("id")
    if kind == "reject":
        code, message = str(record.get("rule")), str(record.get("reason"))
        row = record.get("row")
        if item_id is None and isinstance(row, dict) and isinstance(row.get("custom_id"), str):
            item_id = row["custom_id"]
    else:
        code, message = "generation_failed", str(record.get("error"))
    return {"id": _request_id(state, item_id, record.get("row_index")), "custom_id": item_id, "response": None,
            "error": {"code": code, "message": message}}
