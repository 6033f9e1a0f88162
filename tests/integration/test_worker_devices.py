"""One process per device: ``--devices cpu,cpu`` spawns two real workers on interleaved sub-shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.registry import resolve
from models.zoo.seed import ensure_zoo_registered
from tests.helpers import prepared_run, write_shard

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, devices: str, run_id: str, n: int = 40) -> tuple[Path, subprocess.CompletedProcess[str]]:
    registry = str(tmp_path / "registry")
    ensure_zoo_registered(registry)
    mv = resolve(registry, "catalog-copy", alias="production")
    state = prepared_run(str(tmp_path / "runs"), run_id=run_id, model=mv,
                         generation={"batch_size": 4, "max_new_tokens": 12})
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n]]
    write_shard(state, 0, [{"id": r["id"], "prompt": r["prompt"], "seed": i, "params": {}, "row_index": i}
                           for i, r in enumerate(rows)])
    proc = subprocess.run([sys.executable, "-m", "genbatch", "worker", "--run-dir", state.layout.root, "--shard", "0",
                           "--devices", devices], capture_output=True, text=True, timeout=300, check=False)
    return Path(state.layout.root), proc


def _outputs(root: Path) -> dict[str, str]:
    return {r["id"]: r["output"] for p in root.glob("outputs/shard-00000/part-*.jsonl")
            for r in map(json.loads, p.read_text().splitlines())}


def test_two_cpu_processes_split_the_shard_and_match_one_process(tmp_path: Path) -> None:
    two_root, two = _run(tmp_path, "cpu,cpu", "two")
    assert two.returncode == 0, two.stderr[-2000:]
    one_root, one = _run(tmp_path, "cpu", "one")
    assert one.returncode == 0, one.stderr[-2000:]
    ranks = {p.name.split("-")[1] for p in two_root.glob("outputs/shard-00000/part-*.jsonl")}
    assert ranks == {"r00", "r01"}, "each device process writes its own parts"
    assert _outputs(two_root) == _outputs(one_root)
    assert len(_outputs(two_root)) == 40
    manifest = json.loads((two_root / "outputs/shard-00000/_manifest.json").read_text())
    assert manifest["devices"] == ["cpu", "cpu"] and manifest["generated"] == 40
    assert (two_root / "outputs/shard-00000/metrics-r01.prom").exists()


def test_a_crashed_device_process_fails_the_shard_with_its_exit_code(tmp_path: Path) -> None:
    root, proc = _run(tmp_path, "cpu,nosuchdevice", "crash", n=8)
    assert proc.returncode == 2
    assert "rank 1 (nosuchdevice) exited with code 1" in proc.stderr
    assert not (root / "outputs/shard-00000/_manifest.json").exists()
