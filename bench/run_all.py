"""Run every benchmark in turn (each prints its own JSON lines): ``make bench``."""

from __future__ import annotations

import subprocess
import sys

BENCHES = ["bench.worker_throughput", "bench.structured_output", "bench.sharding", "bench.preprocess_scale",
           "bench.optimization", "bench.overhead", "bench.dag_parse"]


def main() -> int:
    failed = [b for b in BENCHES if subprocess.run([sys.executable, "-m", b], check=False).returncode != 0]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
