"""Which JSON and JSONL objects of a run dir cannot be read back, and why: ``genbatch reconcile``'s findings for
a damaged run (a truncated part, manifest or spec) instead of a decoder traceback that names no file."""

from __future__ import annotations

import json
from typing import Any

from genbatch.io import storage
from genbatch.io.input_rows import json_error_at

JSON_SUFFIXES = (".json", ".jsonl")
JSON_MARKERS = ("_SUCCESS", "_FAILED")  # JSON documents without the suffix (success.schema.json, failed.schema.json)


def _problem(rel: str, data: bytes) -> str | None:
    """What is wrong with one object's bytes (None when it reads back as its kind of file)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 at byte {exc.start}"
    if rel.endswith(".json") or rel.rsplit("/", 1)[-1] in JSON_MARKERS:
        if not text.strip():
            return "empty: a JSON document was expected"
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"not valid JSON ({json_error_at(exc)} of line {exc.lineno}): truncated or overwritten?"
        return None
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = " (the file's last line, without a newline: truncated?)" if not text.endswith("\n") and \
                number == text.count("\n") + 1 else ""
            return f"line {number} is not valid JSON ({json_error_at(exc)}){cut}"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object"
    return None


def damaged_files(root: str) -> list[dict[str, str]]:
    """``[{"path": <relative to root>, "problem": ...}]`` for every unreadable JSON/JSONL object under ``root``."""
    found = []
    for uri in storage.list_uris(root):
        rel = uri[len(root):].lstrip("/")
        if not rel.endswith(JSON_SUFFIXES) and rel.rsplit("/", 1)[-1] not in JSON_MARKERS:
            continue
        try:
            problem = _problem(rel, storage.read_bytes(uri))
        except Exception as exc:  # noqa: BLE001 - an object listed but unreadable is this finding too
            problem = f"cannot be read ({exc})"
        if problem is not None:
            found.append({"path": rel, "problem": problem})
    return found
