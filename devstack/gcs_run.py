"""``make run-gcs``: the example run with its outputs on gs://, served by a local fake-gcs-server.

The emulator keeps objects in memory, so this prints what was published before it stops.
Point ``STORAGE_EMULATOR_HOST`` elsewhere (or unset it, with real credentials) for real GCS.
"""

from __future__ import annotations

import argparse
import os

from devstack.gcs_emulator import GcsEmulator
from genbatch.cli.commands import main as cli_main
from genbatch.io import storage

BUCKET = "genbatch-runs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.gcs_run")
    parser.add_argument("spec")
    parser.add_argument("--bucket", default=BUCKET)
    args = parser.parse_args(argv)
    with GcsEmulator() as emu:
        emu.create_bucket(args.bucket)
        os.environ["STORAGE_EMULATOR_HOST"] = emu.url
        storage.reset_client()
        code = cli_main(["run", args.spec, "--output", f"gs://{args.bucket}/runs"])
        objects = storage.list_uris(f"gs://{args.bucket}/runs")
        print(f"genbatch: {len(objects)} objects published under gs://{args.bucket}/runs on {emu.url}; "
              f"_SUCCESS markers: {[u for u in objects if u.endswith('/_SUCCESS')]}")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
