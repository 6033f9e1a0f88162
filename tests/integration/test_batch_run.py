"""Real batch runs end to end: ``genbatch run`` → ``dag.test()`` of batch_generation on SQLite.

Each run is a subprocess (Airflow reads its configuration at import), with a shared Airflow
home and registry under one session directory so the DB migration happens once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from genbatch.io import storage
from genbatch.run.layout import RunLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BAD_ROWS = [
    {"id": "bad/slash", "prompt": "colour: red | material: wool | item: scarf\ndescription:"},
    {"id": "no-prompt"},
    {"id": "sku-00001", "prompt": "duplicate id\ndescription:"},
]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("genbatch-work")


def _input(workdir: Path, n_good: int) -> tuple[Path, list[dict[str, Any]]]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n_good]]
    rows += BAD_ROWS
    path = workdir / f"input-{n_good}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _run(workdir: Path, spec: dict[str, Any], run_id: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    spec_path = workdir / f"{run_id}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [sys.executable, "-m", "genbatch", "run", str(spec_path), "--run-id", run_id],
        cwd=workdir, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}, check=False,
    )


def _text_spec(input_path: Path, output: str) -> dict[str, Any]:
    return {
        "task": "text",
        "input": {"uri": str(input_path)},
        "model": {"name": "catalog-copy", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"max_new_tokens": 40, "seed": 11},
        "sharding": {"num_shards": 2},
        "quality": {"max_reject_rate": 0.2, "min_attribute_mention_rate": 0.85},
        "output": {"uri": output},
    }


def _read_jsonl(uri: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in storage.iter_lines(uri) if x.strip()]


def _check_run(root: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    layout = RunLayout(root)
    for uri in (layout.spec, layout.validation_report, layout.shard_plan, layout.quality_metrics,
                layout.quality_summary, layout.report_html, layout.manifest, layout.success):
        assert storage.exists(uri), uri
    manifest = storage.read_json(layout.manifest)
    counts = manifest["counts"]
    assert counts["input"] == len(rows)
    assert counts["input"] == counts["accepted"] + counts["rejected"]
    assert counts["accepted"] == counts["generated"] + counts["errored"]
    assert counts["items_lost"] == 0 and counts["items_duplicated"] == 0
    rejects = [r for u in storage.list_uris(layout.rejects_dir) for r in _read_jsonl(u)]
    assert sorted(r["rule"] for r in rejects) == ["duplicate_id", "id_unsafe", "prompt_missing"]
    outputs = [r for s in range(2) for u in storage.list_uris(layout.outputs_dir(s))
               if u.rsplit("/", 1)[-1].startswith("part-") for r in _read_jsonl(u)]
    errors = [r for s in range(2) for r in _read_jsonl(layout.errors_file(s))]
    ids = Counter([r["id"] for r in outputs] + [r["id"] for r in errors])
    assert all(c == 1 for c in ids.values())
    assert len(ids) == len(rows) - 3
    listed = {f["path"] for f in manifest["files"]}
    assert "spec.json" in listed and any(p.startswith("outputs/shard-00001/part-") for p in listed)
    assert storage.read_json(layout.spec)["model"]["version"] == 2  # production alias pinned
    return manifest


def test_text_run_end_to_end_on_local_disk(workdir: Path) -> None:
    input_path, rows = _input(workdir, 60)
    proc = _run(workdir, _text_spec(input_path, str(workdir / "runs")), "local-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert summary["dag_run"].endswith("success") and summary["success_marker"] is True
    assert all(v.startswith("PASS") for v in summary["gates"].values())
    manifest = _check_run(str(workdir / "runs" / "local-run"), rows)
    assert manifest["quality"]["metrics"]["attribute_mention_rate"] >= 0.85


def test_text_run_publishes_to_gcs_emulator(workdir: Path, gcs_emulator: Any, gcs_bucket: str) -> None:
    input_path, rows = _input(workdir, 24)
    output = f"gs://{gcs_bucket}/runs"
    proc = _run(workdir, _text_spec(input_path, output), "gcs-run", env={"STORAGE_EMULATOR_HOST": gcs_emulator.url})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_run(f"{output}/gcs-run", rows)


def test_image_run_writes_pngs(workdir: Path) -> None:
    rows = [{"id": f"img-{i}", "prompt": f"a {c} square"} for i, c in enumerate(["red", "blue", "green", "tiny"])]
    input_path = workdir / "images.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "task": "image",
        "input": {"uri": str(input_path)},
        "model": {"name": "tiny-image", "alias": "production", "registry": ".genbatch/registry"},
        "generation": {"num_inference_steps": 4, "height": 64, "width": 64},
        "sharding": {"num_shards": 2},
        "output": {"uri": str(workdir / "runs")},
    }
    proc = _run(workdir, spec, "image-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    root = workdir / "runs" / "image-run"
    pngs = sorted(p.name for p in root.glob("outputs/shard-*/images/*.png"))
    assert pngs == sorted(f"img-{i}.png" for i in range(4))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in root.glob("outputs/shard-*/images/*.png"))
    assert (root / "_SUCCESS").exists()
