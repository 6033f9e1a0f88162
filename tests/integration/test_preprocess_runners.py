"""Acceptance: the same input gives byte-identical shards, rejects and plan on every local runner setup.

FnApiRunner with one worker (the default), with two threads, with two worker processes, the
BundleBasedDirectRunner, and tiny spills (hundreds of sorted runs, merged in several rounds):
bundling and run boundaries must not leak into the output.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import run
from models.registry import register_version
from tests.helpers import prepared_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROWS = 1500
SHARDS = 4
VARIANTS: dict[str, list[str]] = {
    "fnapi-1": [],
    "fnapi-2-threads": ["--direct_num_workers=2", "--direct_running_mode=multi_threading"],
    "fnapi-2-processes": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "bundle-based-direct": ["--runner=BundleBasedDirectRunner"],
    "tiny-spills": ["--spill-bytes=1500"],
}


def _accepted(n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    words = ["soft", "warm", "classic", "handmade", "durable", "light", "modern", "gift"]
    rows = []
    for i in range(n):
        extra = " ".join(rng.choice(words) for _ in range(min(int(rng.paretovariate(1.2)), 40)))
        ident = f"sku-{i - 7:05d}" if i % 97 == 96 else f"sku-{i:05d}"  # some duplicate ids
        rows.append({"index": i, "row": {"id": ident, "prompt": f"colour: red | item: scarf {extra}\ndescription:",
                                         "params": {"max_new_tokens": 8 + (i % 3) * 20}, "meta": {"n": i}}})
    return rows


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    base = tmp_path_factory.mktemp("runners")
    model = register_version(str(base / "registry"), "catalog-copy", REPO / "models/zoo/catalog-copy/v1")
    body = "".join(json.dumps(r) + "\n" for r in _accepted(ROWS))
    results: dict[str, dict[str, bytes]] = {}
    for name, args in VARIANTS.items():
        state = prepared_run(str(base / name), num_shards=SHARDS, model=model, run_id="same-run",
                             generation={"max_new_tokens": 40, "seed": 5})
        accepted = Path(state.layout.validation_accepted)
        accepted.parent.mkdir(parents=True)
        accepted.write_text(body)
        run(["--run-dir", state.layout.root, *args])
        root = Path(state.layout.root)
        results[name] = {str(p.relative_to(root)): p.read_bytes()
                         for p in sorted(root.rglob("*")) if p.is_file() and p.name != "spec.json"}
    return results


def test_every_runner_writes_byte_identical_outputs(outputs: dict[str, dict[str, bytes]]) -> None:
    reference = outputs["fnapi-1"]
    assert sorted(reference) == sorted(
        ["shards/_plan.json", "rejects/part-preprocess-00000.jsonl", "validation/accepted.jsonl"]
        + [f"shards/shard-{s:05d}-of-{SHARDS:05d}.jsonl" for s in range(SHARDS)]
    )
    for name, files in outputs.items():
        assert sorted(files) == sorted(reference), name  # no temp files left behind either
        for path, data in files.items():
            assert hashlib.sha256(data).hexdigest() == hashlib.sha256(reference[path]).hexdigest(), (name, path)


def test_the_plan_records_balance_and_checksums(outputs: dict[str, dict[str, bytes]]) -> None:
    files = outputs["fnapi-1"]
    plan = json.loads(files["shards/_plan.json"])
    assert plan["makespan_ratio"] <= 1.05
    assert plan["rejects_by_rule"]["duplicate_id"] > 0
    assert plan["rows"]["accepted"] == ROWS == plan["rows"]["sharded"] + plan["rows"]["rejected"]
    for entry in plan["shards"]:
        data = files[f"shards/shard-{entry['shard']:05d}-of-{SHARDS:05d}.jsonl"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        items = [json.loads(x) for x in data.decode().splitlines()]
        assert entry["items"] == len(items) and entry["est_cost"] == sum(it["est_cost"] for it in items)
        assert [(it["est_tokens"], it["id"]) for it in items] == sorted((it["est_tokens"], it["id"]) for it in items)
