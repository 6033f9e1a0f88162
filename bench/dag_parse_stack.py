"""The DAG processor's own per-file duration with N scheduled specs, on the real local Airflow stack.

``python -m bench.dag_parse_stack [--specs 200] [--cycles 4]``

bench/dag_parse.py times one file in a pinned child. This is what Airflow itself records: the stack
(``devstack.airflow_stack.running_stack``: PostgreSQL, api-server, scheduler, dag-processor, triggerer)
parses the repository's dags/ with ``--specs`` generated specs (bench.dag_parse.write_specs), and each
parse cycle's ``last_parse_duration`` (DagModel; the processor child's wall time: start, parse,
serialize) is read from the REST API for ``genbatch__cron-000`` (dags/scheduled_specs.py) and for
``batch_generation``. The dag-processor parses the files of a cycle in parallel on this machine's cores,
as it does in production. Prints one JSON line: every cycle's figures, their medians, the 2 s target.
Needs PostgreSQL (Debian's, as ``make airflow``); not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 2.0
PROBES = {"scheduled_specs.py": "genbatch__cron-000", "batch_generation.py": "batch_generation"}


def measure(n: int, cycles: int, timeout_s: float = 900) -> dict[str, Any]:
    """Start a stack on ``n`` generated specs; ``cycles`` parse durations of each probed file."""
    from bench.dag_parse import write_specs
    from devstack.airflow_stack import running_stack
    from tests.airflow_api import Api

    with tempfile.TemporaryDirectory(prefix="genbatch-dag-parse-stack-") as tmp:
        work = Path(tmp)
        counts = write_specs(work / "specs", n, work)
        seen: dict[str, list[tuple[str, float]]] = {f: [] for f in PROBES}
        with running_stack(work / "airflow", extra_env={"GENBATCH_SPECS_DIR": str(work / "specs")}) as stack:
            api = Api(stack)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and min(len(v) for v in seen.values()) < cycles:
                for file, dag_id in PROBES.items():
                    resp = api.call("GET", f"/dags/{dag_id}/details")
                    if resp.status_code != 200:
                        continue
                    details = resp.json()
                    parsed = (str(details["last_parsed_time"]), float(details["last_parse_duration"] or 0.0))
                    if parsed[1] and parsed not in seen[file]:
                        seen[file].append(parsed)
                        print(f"dag_parse_stack: {file} parsed at {parsed[0]} in {parsed[1]:.3f} s",
                              file=sys.stderr, flush=True)
                time.sleep(2)
    files = {f: {"cycles_s": [round(d, 3) for _, d in v[:cycles]],
                 "median_s": round(statistics.median(d for _, d in v[:cycles]), 3) if v else None}
             for f, v in seen.items()}
    factory = files["scheduled_specs.py"]["median_s"]
    return {"bench": "dag_parse_stack", "specs": n, "mix": counts, "cycles": cycles, "files": files,
            "target_s": TARGET_S, "pass": factory is not None and factory <= TARGET_S,
            "cpus": os.cpu_count(), "load": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    """Run it; one JSON line to stdout; exit 0 whether or not the target holds (the line says)."""
    parser = argparse.ArgumentParser(prog="bench.dag_parse_stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", type=int, default=200, help="generated scheduled specs (default 200)")
    parser.add_argument("--cycles", type=int, default=4, help="parse cycles to record per file (default 4)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.specs, args.cycles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
