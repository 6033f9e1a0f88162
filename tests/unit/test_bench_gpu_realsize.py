"""bench/gpu_realsize.py --smoke: the real-size bench's whole path on a CPU with tiny configs (issue 19's CPU part).

Models are built from config with random weights, saved as safetensors, registered (card.json sha256s) and run
by the real worker (``run_subshard`` → ``fetch_verified`` → ``load_runner``), text and image; every item is
written once. The smoke figures measure nothing: the real sizes need the lent GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_smoke_run_builds_registers_and_runs_both_models_through_the_worker() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_realsize", "--smoke", "--device", "cpu"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text, image = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert text["task"] == "text" and text["smoke"] and text["device"]["name"] == "cpu"
    assert text["worker"]["accounted"] == {"items": 24, "written": 24, "lost": 0, "doubled": 0}
    assert text["prompt_tokens"]["min"] >= 15 and text["prompt_tokens"]["max"] <= 96
    assert set(text["legs_items_per_s"]) == {"worker_own_loop_in_process", "generate"}
    assert text["of_roofline"] is None  # no memory-bandwidth figure for a CPU: no roofline claimed
    assert image["task"] == "image" and image["worker"]["accounted"] == {"items": 4, "written": 4, "lost": 0, "doubled": 0}


def test_real_sizes_refuse_to_run_without_a_gpu() -> None:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_realsize", "--device", "cpu", "--task", "text"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "real-size models need a GPU" in proc.stderr
