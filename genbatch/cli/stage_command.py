"""``genbatch stage {quality_gate,publish} --run-dir DIR``: a large run's stage as a worker command.

What runs and why is in :mod:`genbatch.stages.stage_jobs`; this is its command line: exit 0 with the JSON
result as the last stdout line, 2 permanent, 3 a quality gate failed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from genbatch.errors import GenbatchError, QualityGateFailed
from genbatch.ops import logs
from genbatch.stages.generate import EXIT_PERMANENT
from genbatch.stages.stage_jobs import EXIT_GATE_FAILED, STAGE_TASKS, hand_back, run_stage


def main(argv: list[str] | None = None) -> int:
    """``genbatch stage {quality_gate,publish} --run-dir DIR``."""
    parser = argparse.ArgumentParser(prog="genbatch stage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=STAGE_TASKS)
    parser.add_argument("--run-dir", required=True, help="run directory URI (local path or gs://)")
    args = parser.parse_args(argv)
    logs.configure()
    logs.bind(run_id=logs.run_id_of(args.run_dir))
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO chatter would flood the task log
    try:
        result = run_stage(args.task, args.run_dir)
    except QualityGateFailed as exc:
        print(f"genbatch stage {args.task}: {exc}", file=sys.stderr, flush=True)
        return EXIT_GATE_FAILED
    except GenbatchError as exc:
        print(f"genbatch stage {args.task}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_PERMANENT
    hand_back(result)
    return 0


