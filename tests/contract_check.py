"""Check a real run dir (local or gs://) against the output contract: every file, every record, every count.

Used by the end-to-end runs (tests/integration/test_batch_run.py) so that any field a writer adds to a
record, or any file the manifest cannot classify, fails a test until the schema and docs/output-contract.md
say so. Reads through genbatch's storage layer; the outside consumer's view is tested without it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import jsonschema

from genbatch.io import storage
from genbatch.run import contract
from genbatch.run.layout import RunLayout, listed_in_manifest


def validate(record: Any, name: str, where: str) -> None:
    """``record`` against contract schema ``name``; the error names the file and line."""
    try:
        jsonschema.validate(record, contract.schema(name), format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError as exc:
        raise AssertionError(f"{where} breaks the {name} schema: {exc.message} (at {list(exc.absolute_path)})") from None


def check_against_contract(root: str) -> dict[str, Any]:
    """Assert that the published run at ``root`` follows the contract; returns its manifest."""
    layout = RunLayout(root)
    manifest_data = storage.read_bytes(layout.manifest)
    success = json.loads(storage.read_bytes(layout.success))
    validate(success, "success", "_SUCCESS")
    assert success["manifest_sha256"] == hashlib.sha256(manifest_data).hexdigest(), "_SUCCESS vouches for another manifest"
    assert not storage.exists(layout.failed), "a published run keeps a _FAILED marker"
    manifest: dict[str, Any] = json.loads(manifest_data)
    validate(manifest, "manifest", "manifest.json")
    assert manifest["contract_version"] == success["contract_version"] == contract.CONTRACT_VERSION

    listed = {entry["path"]: entry for entry in manifest["files"]}
    present = {rel for rel in (layout.rel(uri) for uri in storage.list_uris(root)) if listed_in_manifest(rel)}
    assert present == set(listed), f"objects not listed: {sorted(present - set(listed))}; listed, missing: " \
                                   f"{sorted(set(listed) - present)}"
    kinds = Counter(entry["kind"] for entry in manifest["files"])
    assert "other" not in kinds, [p for p, e in listed.items() if e["kind"] == "other"]
    records: dict[str, int] = Counter()
    row_indexes: Counter[int] = Counter()
    for rel, entry in sorted(listed.items()):
        data = storage.read_bytes(layout.path(rel))
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["bytes"], entry["sha256"]), rel
        if "records" not in entry:
            continue
        lines = [line for line in data.decode().split("\n") if line.strip()]
        assert entry["records"] == len(lines), rel
        name = contract.record_schema(entry["kind"], manifest["task"])
        for n, line in enumerate(lines, start=1):
            record = json.loads(line)
            validate(record, name, f"{rel} line {n}")
            if entry["kind"] in contract.RECORD_KINDS:
                row_indexes[record["row_index"]] += 1
            if "image_path" in record:
                assert listed[record["image_path"]]["kind"] == "image", f"{rel} line {n}: no image listed"
        records[entry["kind"]] += len(lines)

    counts = manifest["counts"]
    assert (records["output"], records["error"], records["reject"]) == (
        counts["generated"], counts["errored"], counts["rejected"]), (dict(records), counts)
    # The row index is the key: every input row in exactly one record of the three kinds.
    assert sorted(row_indexes) == list(range(counts["input"])) and set(row_indexes.values()) == {1}
    assert kinds["image"] == (counts["generated"] if manifest["task"] == "image" else 0)
    return manifest
