"""``make run-gcs``: the example run with its outputs on gs://, served by a local fake-gcs-server.

    python -m devstack.gcs_run SPEC           # start an emulator, run, list what was published, stop it
    python -m devstack.gcs_run SPEC --keep    # `make run-gcs KEEP=1`: leave it running to look at
    python -m devstack.gcs_run --stop         # stop the emulator --keep left running

The emulator keeps objects in memory, so without ``--keep`` they are gone when it stops. With
``--keep`` it runs detached (log and pid under ``.genbatch/``) and the command prints the
``export STORAGE_EMULATOR_HOST=...`` line, the bucket, the run URI and how to stop it; a later
``--keep`` run reuses it. With ``STORAGE_EMULATOR_HOST`` already set, that emulator is used (the
bucket created when missing) and nothing is started or stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack.gcs_emulator import GcsEmulator, create_bucket, server_alive, stop_server
from genbatch.cli.commands import default_run_id
from genbatch.cli.commands import main as cli_main
from genbatch.cli.process import run_as_process
from genbatch.io import storage
from genbatch.run.spec import load_spec

BUCKET = "genbatch-runs"
STATE_DIR = Path(".genbatch")  # like the embedded Airflow home: under the current directory
STATE_FILE = STATE_DIR / "gcs-emulator.json"
LOG_FILE = STATE_DIR / "gcs-emulator.log"


@dataclass(frozen=True)
class Kept:
    """A detached emulator left running by ``--keep``, as recorded in STATE_FILE."""

    url: str
    pid: int
    log: str


def _kept() -> Kept | None:
    """The emulator an earlier ``--keep`` left running (None when there is none, or it died)."""
    try:
        kept = Kept(**json.loads(STATE_FILE.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return kept if server_alive(kept.pid) else None


def _start_kept() -> Kept:
    """A detached emulator that outlives this process, recorded in STATE_FILE for ``--stop``."""
    emu = GcsEmulator(log_path=LOG_FILE.resolve()).start()
    kept = Kept(url=emu.url, pid=emu.release(), log=str(LOG_FILE.resolve()))
    STATE_FILE.write_text(json.dumps(asdict(kept)))
    return kept


@contextlib.contextmanager
def _emulator(keep: bool) -> Iterator[tuple[str, Kept | None]]:
    """(URL, kept): the emulator in STORAGE_EMULATOR_HOST, a kept one (``--keep``), or a throw-away one."""
    external = os.environ.get("STORAGE_EMULATOR_HOST")
    if external:
        print(f"genbatch: using the emulator at STORAGE_EMULATOR_HOST={external} (not starting one)")
        yield external, None
    elif keep:
        kept = _kept() or _start_kept()
        yield kept.url, kept
    else:
        with GcsEmulator() as emu:
            yield emu.url, None


def _publish(url: str, spec: str, bucket: str, run_id: str) -> int:
    """Run the spec with its output on gs://BUCKET/runs of the emulator at ``url``; the run's exit code."""
    create_bucket(url, bucket)
    os.environ["STORAGE_EMULATOR_HOST"] = url
    storage.reset_client()
    code = cli_main(["run", spec, "--output", f"gs://{bucket}/runs", "--run-id", run_id])
    objects = storage.list_uris(f"gs://{bucket}/runs/{run_id}")
    print(f"genbatch: {len(objects)} objects published under gs://{bucket}/runs/{run_id} on {url}; "
          f"_SUCCESS markers: {[u for u in objects if u.endswith('/_SUCCESS')]}")
    return code


def _print_kept(kept: Kept, bucket: str, run_id: str) -> None:
    """What to paste to look at the kept emulator's objects, and how to stop it."""
    print(f"genbatch: the emulator keeps running (pid {kept.pid}, log {kept.log}); to look at the run:\n"
          f"export STORAGE_EMULATOR_HOST={kept.url}\n"
          f"bucket: gs://{bucket}\n"
          f"run: gs://{bucket}/runs/{run_id}\n"
          f"stop it (from {Path.cwd()}): {sys.executable} -m devstack.gcs_run --stop   (or: kill {kept.pid})")


def stop() -> int:
    """``--stop``: stop the emulator ``--keep`` left running (0 also when none was running)."""
    kept = _kept()
    STATE_FILE.unlink(missing_ok=True)
    if kept is None:
        print("genbatch: no kept emulator is running")
        return 0
    stop_server(kept.pid)
    print(f"genbatch: stopped the emulator at {kept.url} (pid {kept.pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.gcs_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?")
    parser.add_argument("--bucket", default=BUCKET)
    parser.add_argument("--run-id", help="default: the spec's run_id, else its folder name and the time")
    parser.add_argument("--keep", action="store_true", help="leave the emulator running after the run")
    parser.add_argument("--stop", action="store_true", help="stop the emulator --keep left running, and exit")
    args = parser.parse_args(argv)
    if args.stop:
        return stop()
    if not args.spec:
        parser.error("a spec is required (or --stop)")
    run_id = args.run_id or load_spec(args.spec).run_id or default_run_id(args.spec)
    STATE_DIR.mkdir(exist_ok=True)
    with _emulator(args.keep) as (url, kept):
        code = _publish(url, args.spec, args.bucket, run_id)
        if kept is not None:
            _print_kept(kept, args.bucket, run_id)
    return code


if __name__ == "__main__":
    run_as_process(main)  # the collector as genbatch's own processes set it (genbatch.cli.process)
