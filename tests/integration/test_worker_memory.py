"""Peak memory of one worker process does not grow with shard size (issue 3 acceptance, DESIGN §4).

A real worker process (``models.worker.run_shard`` in a fresh ``python -c`` subprocess) runs a
10k-item and a 200k-item shard with 64-item batches and realistic prompts (100-300 chars);
their peak RSS must differ by <= 20%.

What is measured is the worker's own streaming, batching and commit path (shard reading,
windows, JSON encoding, create-only part files, error merge, part summary, shard manifest),
not the model: the runner is ConstantRunner below, a test double of our own runner seam
(the same ``run_batch``/``token_length`` interface the real runners implement), so that 200k
items take seconds. The model's memory does not depend on shard size anyway.

Peak RSS is the child's ``VmHWM`` from /proc/self/status, not ``ru_maxrss``: on Linux
``ru_maxrss`` survives fork+exec, so a child started by a big parent (pytest holding a run, an
Airflow task) reports the parent's peak. Both are printed.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genbatch.run.model_ref import ModelVersion
from tests.worker_harness import catalog_prompts, real_run, worker_env, write_items

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for VmHWM"),
]

BATCH = 64
SMALL, LARGE = 10_000, 200_000
MAX_RATIO = 1.2

# The child process. ConstantRunner is a TEST DOUBLE of our own runner seam (models.runners'
# run_batch/token_length interface): it returns a fixed, realistic-size output instantly, so the
# measurement is the worker's memory, not a model's. ``crash_after`` batches it raises a
# BaseException (nothing in the worker can swallow it), standing in for a killed attempt.
_CHILD = r"""
import json, resource, sys, time
from models.worker import run_shard

class Crash(BaseException):
    pass

class ConstantRunner:
    def __init__(self, crash_after):
        self.calls = 0
        self.crash_after = crash_after

    def token_length(self, prompt):
        return len(prompt) // 4

    def run_batch(self, items):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Crash()
        return [{"output": "A sturdy olive wool shelf, handmade for small rooms; wipe clean, built to last.",
                 "new_tokens": 24} for _ in items]

def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

crash_after = int(sys.argv[2]) if len(sys.argv) > 2 else None
t0 = time.perf_counter()
try:
    m = run_shard(sys.argv[1], 0, device="cpu", runner=ConstantRunner(crash_after))
    out = {"generated": m["generated"], "parts": len(m["parts"]), "resumed_items": m["resumed_items"]}
except Crash:
    out = {"crashed": True}
out.update(vm_hwm_kb=peak_kb(), ru_maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           wall_s=round(time.perf_counter() - t0, 2))
print(json.dumps(out))
"""


def _items(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """Catalog prompts padded with more catalog text to a random 100-300 chars (streamed)."""
    prompts = catalog_prompts()
    rng = random.Random(seed)
    for i in range(n):
        target = rng.randint(100, 300)
        prompt = prompts[i % len(prompts)]
        while len(prompt) < target:
            prompt += " | " + prompts[rng.randrange(len(prompts))]
        yield {"id": f"sku-{i:07d}", "prompt": prompt[:target], "seed": i, "params": {}, "row_index": i,
               "category": "home"}


def _shard(tmp_path: Path, n: int) -> str:
    # The model is never loaded (the runner is injected), so the version needs no registry.
    state = real_run(str(tmp_path / f"out-{n}"), ModelVersion("catalog-copy", 2, "unused"), str(tmp_path / "reg"),
                     run_id=f"mem-{n}", generation={"batch_size": BATCH, "max_new_tokens": 8})
    assert write_items(state, _items(n, seed=n)) == n
    return state.layout.root


def _worker(run_dir: str, crash_after: int | None = None) -> dict[str, Any]:
    args = [sys.executable, "-c", _CHILD, run_dir] + ([] if crash_after is None else [str(crash_after)])
    proc = subprocess.run(args, env=worker_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _report(label: str, small: dict[str, Any], large: dict[str, Any]) -> float:
    ratio = large["vm_hwm_kb"] / small["vm_hwm_kb"]
    print(f"\n{label}: peak RSS (VmHWM) {SMALL} items {small['vm_hwm_kb'] / 1024:.1f} MiB "
          f"({small['wall_s']} s), {LARGE} items {large['vm_hwm_kb'] / 1024:.1f} MiB ({large['wall_s']} s); "
          f"ratio {ratio:.3f} (limit {MAX_RATIO}); ru_maxrss {small['ru_maxrss_kb'] / 1024:.1f} / "
          f"{large['ru_maxrss_kb'] / 1024:.1f} MiB")
    return ratio


def test_peak_rss_of_one_worker_is_flat_from_10k_to_200k_items(tmp_path: Path) -> None:
    small = _worker(_shard(tmp_path, SMALL))
    large = _worker(_shard(tmp_path, LARGE))
    ratio = _report("fresh shard", small, large)
    assert small["generated"] == SMALL and small["parts"] == -(-SMALL // BATCH)
    assert large["generated"] == LARGE and large["parts"] == -(-LARGE // BATCH)
    assert ratio <= MAX_RATIO, f"worker peak RSS grows with shard size: ratio {ratio:.3f} > {MAX_RATIO}"


def test_peak_rss_of_a_resumed_worker_is_flat_from_10k_to_200k_items(tmp_path: Path) -> None:
    figures = []
    for n in (SMALL, LARGE):
        run_dir = _shard(tmp_path, n)
        crashed = _worker(run_dir, crash_after=(n * 95 // 100) // BATCH)  # ~95% committed, then "killed"
        assert crashed.get("crashed")
        resumed = _worker(run_dir)
        assert resumed["generated"] == n and resumed["resumed_items"] >= n * 9 // 10
        figures.append(resumed)
    ratio = _report("resumed at ~95%", *figures)
    assert ratio <= MAX_RATIO, f"resumed worker peak RSS grows with committed ids: ratio {ratio:.3f} > {MAX_RATIO}"
