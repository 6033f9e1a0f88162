"""``sharding.dedupe_identical`` on a real run: identical items are generated once and published for every id.

The stages run in-process, in DAG order, on real parts: the zoo's catalog-copy model from a
local registry, Great Expectations validation, the Beam preprocess on the FnApiRunner, the shard
worker on CPU, the quality gate and publish; then a consumer reads the run through its manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import run as preprocess
from genbatch.io import storage
from genbatch.run.fanout import read_fanout
from genbatch.run.layout import FANOUT_PART, RunLayout
from genbatch.run.outputs import read
from genbatch.run.reconcile import reconcile
from genbatch.stages.prepare import prepare_run
from genbatch.stages.publish import publish
from genbatch.stages.quality import quality_gate
from genbatch.stages.validate import validate_input
from models.registry import resolve_for_spec
from models.worker import run_shard
from models.zoo.seed import ensure_zoo_registered

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NUM_SHARDS = 2


def _rows() -> list[dict[str, Any]]:
    catalog = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:6]]
    rows = [{**r, "seed": 100 + i} for i, r in enumerate(catalog)]
    rows += [
        {**catalog[0], "id": "dup-a1", "seed": 100, "category": "other"},  # same item as row 0, other metadata
        {**catalog[0], "id": "dup-a2", "seed": 100, "prompt": "  " + catalog[0]["prompt"].replace(" | ", " |  ")},
        {**catalog[3], "id": "dup-d1", "seed": 103},  # same item as row 3
        {**catalog[3], "id": "not-dup", "seed": 999},  # another seed: generated on its own
        {**catalog[1], "seed": 101},  # duplicate id of row 1: a reject, never fanned out
    ]
    return rows


def _published_dedupe_run(tmp_path: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A published run with ``dedupe_identical`` (3 fanned-out ids): run dir, input rows, manifest."""
    rows = _rows()
    input_path = tmp_path / "input.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    registry = str(tmp_path / "registry")
    ensure_zoo_registered(registry)
    spec = {
        "task": "text",
        "input": {"uri": str(input_path)},
        "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
        "generation": {"max_new_tokens": 12, "seed": 7},
        "sharding": {"num_shards": NUM_SHARDS, "dedupe_identical": True},
        "quality": {"max_reject_rate": 0.5},
        "output": {"uri": str(tmp_path / "runs")},
    }
    run_dir = prepare_run(spec, "fanout-run", resolve_model=resolve_for_spec)
    validate_input(run_dir)
    plan = preprocess(["--run-dir", run_dir])
    assert plan["rows"] == {"accepted": 11, "sharded": 7, "rejected": 1, "fanned_out": 3}

    for shard in range(NUM_SHARDS):
        run_shard(run_dir, shard, device="cpu")
    before = reconcile(run_dir)  # before publish: fanned-out ids count as their canonical did
    assert before.ok, before.problems
    quality_gate(run_dir)
    return run_dir, rows, publish(run_dir)


def test_identical_items_are_generated_once_and_published_for_every_id(tmp_path: Path) -> None:
    run_dir, rows, manifest = _published_dedupe_run(tmp_path)
    layout = RunLayout(run_dir)

    # Generated once: the shard parts hold each distinct item once, and no fanned-out id.
    generated = Counter(r["id"] for s in range(NUM_SHARDS) for p in storage.read_json(layout.shard_manifest(s))["parts"]
                        for r in map(json.loads, storage.iter_lines(layout.path(p["path"]))) if r)
    fanned = {e["id"]: e for e in read_fanout(layout)}
    assert set(fanned) == {"dup-a1", "dup-a2", "dup-d1"}
    assert sum(generated.values()) == 7 and max(generated.values()) == 1 and not set(generated) & set(fanned)

    # Published for every id: a consumer reads every accepted input id exactly once.
    published = list(read(run_dir))
    ids = Counter(r["id"] for r in published)
    accepted_ids = {r["id"] for r in rows}
    assert ids == Counter(accepted_ids) and len(published) == 10
    by_id = {r["id"]: r for r in published}
    for dup, canonical in (("dup-a1", "sku-00001"), ("dup-a2", "sku-00001"), ("dup-d1", "sku-00004")):
        copy, original = by_id[dup], by_id[canonical]
        assert copy["fanout_of"] == canonical and copy["output"] == original["output"]
        assert copy["seed"] == original["seed"] and copy["model_version"] == original["model_version"]
        assert copy["row_index"] == next(i for i, r in enumerate(rows) if r["id"] == dup)
    assert by_id["dup-a1"]["metadata"]["category"] == "other" and by_id["sku-00001"]["metadata"]["category"] != "other"
    assert storage.exists(layout.fanout_part(fanned["dup-a1"]["shard"]))

    # The manifest counts them, and reconcile holds: nothing lost, nothing doubled, no orphans.
    counts = manifest["counts"]
    assert counts == {"input": 11, "accepted": 10, "rejected": 1, "generated": 10, "errored": 0,
                      "items_lost": 0, "items_duplicated": 0}
    assert manifest["fanned_out"] == {"outputs": 3, "errors": 0}
    after = reconcile(run_dir)
    assert after.ok, after.problems
    assert after.counts() == counts and after.orphans == [] and after.consumer_partial_reads == 0
    assert publish(run_dir) == manifest  # idempotent once committed


def test_erasing_a_fanned_out_id_removes_its_copy(tmp_path: Path) -> None:
    """The subject's row was a fanned-out duplicate: its copy in ``part-fanout.jsonl`` goes too."""
    from genbatch.ops.erasure import Subject, erase

    run_dir, _rows_, _manifest = _published_dedupe_run(tmp_path)
    copies = [uri for uri in storage.list_uris(run_dir) if uri.endswith("/" + FANOUT_PART)]
    assert any(b'"dup-a1"' in storage.read_bytes(c) for c in copies)  # the copy is there first

    record = erase([str(tmp_path / "runs")], Subject.parse(ident="dup-a1"))
    assert record["residual_runs"] == [], record
    left = {uri: data for uri in storage.list_uris(run_dir) if b"dup-a1" in (data := storage.read_bytes(uri))}
    assert left == {}, sorted(left)
    assert "dup-a1" not in {r["id"] for r in read(run_dir)}
    after = reconcile(run_dir)
    assert after.ok, after.problems
