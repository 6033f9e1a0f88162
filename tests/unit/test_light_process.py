"""The heavy-import guard of the Airflow process (genbatch.cli.light_process), in fresh interpreters."""

from __future__ import annotations

import re
import subprocess
import sys

PROBE = r"""
import json, sys
from genbatch.cli.light_process import HeavyImportRefused, forbid_heavy_imports
refused = forbid_heavy_imports(("wave",))
try:
    import wave.x  # noqa
except HeavyImportRefused as exc:
    print("REFUSED", exc)
try:
    import wave
except HeavyImportRefused:
    pass
import csv  # not on the list
print("RECORDED", len(refused))
"""


def test_the_guard_refuses_listed_packages_and_names_the_importer() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    refused = next(line for line in proc.stdout.splitlines() if line.startswith("REFUSED"))
    # the parent package is looked up first; the importer is the probe's line 5
    assert re.match(r"REFUSED wave imported in the Airflow process by <string>:6: ", refused), refused
    assert "run this through the worker command" in refused
    assert "RECORDED 2" in proc.stdout


def test_the_guard_fails_at_once_when_the_package_is_already_imported() -> None:
    probe = ("import wave\nfrom genbatch.cli.light_process import HeavyImportRefused, forbid_heavy_imports\n"
             "try:\n    forbid_heavy_imports(('wave',))\nexcept HeavyImportRefused as exc:\n    print('FAILED', exc)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert "FAILED already imported in this process before the guard: wave" in proc.stdout, proc.stderr
