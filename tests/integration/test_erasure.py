"""``genbatch erase`` on real runs, on local disk and on fake-gcs-server.

Two real runs per backend (a text run and an image run, built by calling the stage functions the DAG's
operators call) hold one data subject: an accepted row with an e-mail in its passthrough metadata, a
later row with the same id (a duplicate_id reject), an output and an image. After the erase, a byte
search of both run trees finds neither the id, the prompts nor the e-mail, ``reconcile`` passes, a
consumer reads the rewritten runs, and the erasure record (under the root) holds only a salted hash.

The built runs also carry the cost figures of issue 10 (manifest + report), checked here, and a run
over its cost ceiling stops after preprocess, before any shard generates.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genbatch.io import storage
from genbatch.run.layout import RunLayout

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SUBJECT = "subject-4711"
EMAIL = "jane.doe@example.org"
TEXT_PROMPT = "colour: teal | material: linen | item: hamper\ndescription:"
IMAGE_PROMPT = "a teal square for jane doe"
SALT = "test-salt-not-secret"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from models.zoo.seed import ensure_zoo_registered

    path = str(tmp_path_factory.mktemp("registry") / "registry")
    ensure_zoo_registered(path)
    return path


def text_rows(n: int = 10) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n]]
    rows.insert(3, {"id": SUBJECT, "prompt": TEXT_PROMPT, "email": EMAIL, "category": "home",
                    "attributes": {"colour": "teal", "material": "linen", "item": "hamper"}})
    rows.append({"id": SUBJECT, "prompt": "colour: teal | material: oak | item: crate\ndescription:"})  # duplicate_id
    rows.append({"id": "bad/slash", "prompt": "colour: red | material: wool | item: scarf\ndescription:"})
    return rows


def image_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"id": f"img-{i}", "prompt": f"a {c} square"}
                                  for i, c in enumerate(["red", "blue", "green", "black"])]
    rows.insert(2, {"id": SUBJECT, "prompt": IMAGE_PROMPT, "email": EMAIL})
    return rows


def build_run(root: str, run_id: str, rows: list[dict[str, Any]], workdir: Path, registry: str, *,
              task: str = "text", num_shards: int | str = 2, **overrides: Any) -> str:
    """A real run through the stage functions (prepare → validate → preprocess → cost check → shards →
    quality → publish); returns its run dir. ``overrides`` replace spec sections."""
    from beam_jobs.preprocess import run as preprocess
    from genbatch.run.state import load_run_state
    from genbatch.stages.cost_check import check_cost_ceiling
    from genbatch.stages.prepare import prepare_run
    from genbatch.stages.publish import publish
    from genbatch.stages.quality import quality_gate
    from genbatch.stages.validate import validate_input
    from models.registry import resolve_for_spec
    from models.worker import run_shard

    input_path = workdir / f"{run_id}.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec: dict[str, Any] = {
        "task": task,
        "input": {"uri": str(input_path)},
        "model": {"name": "catalog-copy" if task == "text" else "tiny-image", "alias": "production",
                  "registry": registry},
        "generation": {"max_new_tokens": 12, "seed": 5} if task == "text" else
        {"num_inference_steps": 2, "height": 32, "width": 32, "seed": 5},
        "sharding": {"num_shards": num_shards},
        "quality": {"max_reject_rate": 0.5, "min_success_rate": 0.5, "min_nonempty_rate": 0.0,
                    "max_duplicate_output_rate": 1.0},
        "output": {"uri": root},
        **overrides,
    }
    run_dir = prepare_run(spec, run_id, resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    check_cost_ceiling(run_dir)
    state = load_run_state(run_dir)
    for shard in range(state.num_shards):
        run_shard(run_dir, shard, devices=["cpu"])
    quality_gate(run_dir)
    publish(run_dir)
    return run_dir


def tree_bytes(run_dir: str) -> dict[str, bytes]:
    return {uri[len(run_dir):]: storage.read_bytes(uri) for uri in storage.list_uris(run_dir)}


def needles(*texts: str) -> list[bytes]:
    out = []
    for text in texts:
        out += [text.encode(), json.dumps(text)[1:-1].encode()]
    return out


def erase_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genbatch", "erase", *args], capture_output=True, text=True,
                          env={**os.environ, "GENBATCH_ERASURE_SALT": SALT}, timeout=600, check=False, cwd=REPO)


@pytest.fixture
def runs(storage_root: str, tmp_path: Path, registry: str) -> tuple[str, str, str]:
    text = build_run(storage_root, "text-run", text_rows(), tmp_path, registry)
    image = build_run(storage_root, "image-run", image_rows(), tmp_path, registry, task="image")
    return storage_root, text, image


def test_erase_removes_the_subject_everywhere_and_runs_still_reconcile(runs: tuple[str, str, str]) -> None:
    from genbatch.run.outputs import read
    from genbatch.run.reconcile import reconcile

    root, text, image = runs
    forbidden = needles(SUBJECT, TEXT_PROMPT, IMAGE_PROMPT, EMAIL, "colour: teal | material: oak | item: crate")
    before = {run: storage.read_json(RunLayout(run).manifest)["counts"] for run in (text, image)}
    assert any(n in data for data in tree_bytes(text).values() for n in forbidden)  # the subject is there first
    assert storage.exists(RunLayout(image).path("outputs", "shard-00000", "images", f"{SUBJECT}.png")) or \
        storage.exists(RunLayout(image).path("outputs", "shard-00001", "images", f"{SUBJECT}.png"))

    proc = erase_cli("--match", f"email={EMAIL}", root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(proc.stdout)

    for run in (text, image):
        tree = tree_bytes(run)
        leaks = {name: [n for n in forbidden if n in data] for name, data in tree.items()}
        assert not {k: v for k, v in leaks.items() if v}, leaks
        assert not any(SUBJECT in name for name in tree)  # the image is gone too
        rec = reconcile(run)
        assert rec.ok, rec.problems
        manifest = storage.read_json(RunLayout(run).manifest)
        assert [e["erasure_id"] for e in manifest["erasures"]] == [record["erasure_id"]]
        assert sum(1 for _ in read(run)) == manifest["counts"]["generated"]
        assert storage.exists(RunLayout(run).success) and storage.exists(RunLayout(run).report_html)
    # Every row is still accounted for: the erased ones became "erased" tombstones, nothing else moved.
    text_counts = storage.read_json(RunLayout(text).manifest)["counts"]
    assert text_counts["input"] == before[text]["input"]
    assert text_counts["accepted"] == before[text]["accepted"] - 1
    assert text_counts["rejected"] == before[text]["rejected"] + 1  # duplicate_id reject -> tombstone, +1 row
    assert text_counts["generated"] == before[text]["generated"] - 1
    assert storage.read_json(RunLayout(image).manifest)["counts"]["generated"] == before[image]["generated"] - 1

    # The record: under the root, counts and a salted hash only.
    assert record["rows_erased"] == 3 and sorted(r["run_id"] for r in record["runs"]) == ["image-run", "text-run"]
    assert all(r["status"] == "erased" and r["residual_objects"] == {"id": 0, "prompt": 0} for r in record["runs"])
    stored = storage.read_bytes(storage.join(root, "_erasures", f"{record['erasure_id']}.json"))
    assert not [n for n in forbidden if n in stored]
    expected = hashlib.sha256(SALT.encode() + b"\0email\0" + EMAIL.encode()).hexdigest()
    assert json.loads(stored)["subject"] == {"field": "email", "value_sha256": expected, "salt": "GENBATCH_ERASURE_SALT"}

    # Idempotent: a second request finds nothing and changes nothing.
    snapshot = {run: tree_bytes(run) for run in (text, image)}
    again = erase_cli("--id", SUBJECT, root)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["runs"] == []
    assert {run: tree_bytes(run) for run in (text, image)} == snapshot


def test_erase_by_id_dry_run_changes_nothing(storage_root: str, tmp_path: Path, registry: str) -> None:
    run = build_run(storage_root, "dry", text_rows(4), tmp_path, registry, num_shards=1)
    snapshot = tree_bytes(run)
    proc = erase_cli("--id", SUBJECT, "--dry-run", storage_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout)
    assert record["dry_run"] and [r["status"] for r in record["runs"]] == ["dry_run"]
    assert record["runs"][0]["rows_erased"] == 2
    assert tree_bytes(run) == snapshot
    assert not storage.list_uris(storage.join(storage_root, "_erasures"))


def test_runs_carry_cost_figures_in_manifest_and_report(storage_root: str, tmp_path: Path, registry: str) -> None:
    run = build_run(storage_root, "cost", text_rows(6), tmp_path, registry, num_shards=2,
                    cost={"ceiling_usd": 5.0, "spot": True})
    manifest = storage.read_json(RunLayout(run).manifest)
    figures = manifest["cost_estimate"]
    assert figures["price"] == {"accelerator": "cpu", "node_type": None, "note": None, "spot": True,
                                "usd_per_device_hour": 0.047, "usd_per_node_hour": 0.0}
    assert figures["device_s"] > 0 and figures["items"] == manifest["counts"]["generated"]
    assert figures["items_per_device_s"] == pytest.approx(figures["items"] / figures["device_s"], rel=1e-3)
    assert figures["usd"] == pytest.approx(figures["device_s"] / 3600 * 0.047, rel=1e-3)
    assert 0 < figures["preflight_usd"] <= 5.0 and figures["ceiling_usd"] == 5.0
    assert [s["shard"] for s in manifest["shards"]] == [0, 1]
    assert all(s["device_s"] > 0 and s["usd"] > 0 and s["items_per_device_s"] > 0 for s in manifest["shards"])
    report = storage.read_text(RunLayout(run).report_html)
    assert "id='cost'" in report and "device-seconds" in report and "per 1k items" in report


def test_over_the_ceiling_stops_before_generation(tmp_path: Path, registry: str) -> None:
    from beam_jobs.preprocess import run as preprocess
    from genbatch.plan.cost import CostCeilingExceeded
    from genbatch.stages.cost_check import check_cost_ceiling
    from genbatch.stages.prepare import prepare_run
    from genbatch.stages.validate import validate_input
    from models.registry import resolve_for_spec

    input_path = tmp_path / "in.jsonl"
    input_path.write_text("".join(json.dumps(r) + "\n" for r in text_rows(6)))
    spec = {"task": "text", "input": {"uri": str(input_path)},
            "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
            "cost": {"ceiling_usd": 0.0001, "accelerator": "nvidia-h100-80gb"},
            "sharding": {"num_shards": 2}, "output": {"uri": str(tmp_path / "runs")}}
    run_dir = prepare_run(spec, "capped", resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    with pytest.raises(CostCeilingExceeded, match=r"exceeds cost.ceiling_usd=\$0.00.*stops before generation"):
        check_cost_ceiling(run_dir)
    layout = RunLayout(run_dir)
    assert storage.read_json(layout.path("validation", "cost.json"))["within_ceiling"] is False
    assert not storage.list_uris(layout.path("outputs"))  # no shard ran
