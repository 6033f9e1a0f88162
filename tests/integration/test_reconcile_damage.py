"""``genbatch reconcile`` on a damaged run, as a user calls it: each kind of file cut short is reported as a
finding (its path and what is wrong) in the JSON, exit 1, never a traceback (issue 21).

One real run is made once (the stages in-process, in DAG order: validate, the Beam preprocess, the CPU
worker, the quality gate, publish) and copied for each damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from beam_jobs.preprocess import run as preprocess
from genbatch.cli.commands import main as genbatch
from genbatch.stages.prepare import prepare_run
from genbatch.stages.publish import publish
from genbatch.stages.quality import quality_gate
from genbatch.stages.validate import validate_input
from models.registry import resolve_for_spec
from models.worker import run_shard
from models.zoo.seed import ensure_zoo_registered

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("damage")
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:8]]
    rows.append({"id": "no-prompt"})  # one reject, so there is a rejects file to damage
    (tmp / "input.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    registry = str(tmp / "registry")
    ensure_zoo_registered(registry)
    spec: dict[str, Any] = {
        "task": "text", "input": {"uri": str(tmp / "input.jsonl")},
        "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
        "generation": {"max_new_tokens": 8, "seed": 3}, "sharding": {"num_shards": 2},
        "quality": {"max_reject_rate": 0.5, "min_nonempty_rate": 0.0, "max_duplicate_output_rate": 1.0},
        "output": {"uri": str(tmp / "runs")},
    }
    run_dir = prepare_run(spec, "damage", resolve_model=resolve_for_spec)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    for shard in range(2):
        run_shard(run_dir, shard, device="cpu")
    quality_gate(run_dir)
    publish(run_dir)
    return Path(run_dir)


def _reconcile(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = genbatch(["reconcile", str(run_dir)])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _cut(path: Path) -> None:
    """Truncate a file in the middle of a line (where a killed copy or a full disk leaves it)."""
    data = path.read_bytes()
    cut = len(data) // 2
    while cut > 1 and data[cut - 1:cut] in (b"\n", b"}", b" "):
        cut -= 1
    path.write_bytes(data[:cut])


DAMAGES = {
    "output part": "outputs/shard-00000/part-r00-00000.jsonl",
    "rejects file": "rejects/part-validate-00000.jsonl",
    "shard file": "shards/shard-00001-of-00002.jsonl",
    "shard manifest": "outputs/shard-00001/_manifest.json",
    "run manifest": "manifest.json",
    "spec": "spec.json",
}


def test_an_intact_run_reconciles(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = _reconcile(published, capsys)
    assert code == 0 and report["ok"] and report["damaged"] == [] and report["generated"] == 8


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_file_cut_short_is_a_finding_not_a_traceback(published: Path, tmp_path: Path, kind: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(published, run_dir)
    rel = DAMAGES[kind]
    assert (run_dir / rel).exists(), sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    _cut(run_dir / rel)
    code, report = _reconcile(run_dir, capsys)
    assert code == 1 and report["ok"] is False
    assert [d["path"] for d in report["damaged"]] == [rel]
    problem = report["damaged"][0]["problem"]
    assert "not valid JSON" in problem and " at at " not in problem, problem
    assert any(p.startswith(f"{rel}: ") for p in report["problems"])
