"""The preprocess job on a gs:// run directory (fake-gcs-server): same bytes as on local disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import preprocess_tmp, run
from genbatch.io import storage
from tests.helpers import prepared_run

pytestmark = pytest.mark.integration


def _body() -> str:
    rows = [{"index": i, "row": {"id": f"id-{i % 90:03d}", "prompt": "word " * (1 + i % 13), "seed": i}} for i in range(100)]
    return "".join(json.dumps(r) + "\n" for r in rows)


def _outputs(root: str) -> dict[str, bytes]:
    return {uri[len(root):]: storage.read_bytes(uri) for uri in storage.list_uris(root) if not uri.endswith("spec.json")}


def test_gcs_run_dir_gives_the_same_bytes_as_local(tmp_path: Path, gcs_bucket: str) -> None:
    results: dict[str, dict[str, Any]] = {}
    for name, base in (("local", str(tmp_path / "runs")), ("gcs", f"gs://{gcs_bucket}/runs")):
        state = prepared_run(base, num_shards=3)
        storage.write_text(state.layout.validation_accepted, _body())
        plan = run(["--run-dir", state.layout.root, "--spill-bytes=400"])
        assert plan["rows"] == {"accepted": 100, "sharded": 90, "rejected": 10, "fanned_out": 0}
        assert storage.list_uris(preprocess_tmp(state.layout)) == []
        results[name] = _outputs(state.layout.root)
    assert results["gcs"] == results["local"]
    # A rerun (a retried Airflow task) finds identical objects: create-only writes succeed.
    state = prepared_run(f"gs://{gcs_bucket}/runs", num_shards=3)
    assert run(["--run-dir", state.layout.root])["items"] == 90
