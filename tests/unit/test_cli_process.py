"""genbatch's own processes run with the collector set for a short-lived process (genbatch.cli.process).

Each case runs a real interpreter: the settings are process-wide, so this test process keeps its own. An
``atexit`` hook reports what the process ran with: atexit runs after ``main`` returned or raised, before the
interpreter's final collections, which is the moment the freeze is for.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from genbatch.cli.process import YOUNG_COLLECTION_THRESHOLD

REPO = Path(__file__).resolve().parents[2]

REPORT = """
import atexit, gc, json, sys
atexit.register(lambda: print("REPORT " + json.dumps({"threshold": gc.get_threshold(),
                                                       "frozen": gc.get_freeze_count()}), flush=True))
"""


def _report(body: str, *args: str) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run([sys.executable, "-c", REPORT + body, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("REPORT ")]
    assert line, proc.stdout + proc.stderr
    return proc.returncode, json.loads(line[-1].removeprefix("REPORT ")), proc.stdout + proc.stderr


@pytest.mark.parametrize(("body", "code"), [
    ("from genbatch.cli.process import run_as_process\nrun_as_process(lambda: 3)", 3),
    ("from genbatch.cli.process import run_as_process\nrun_as_process(lambda: None)", 0),
    ("from genbatch.cli.process import run_as_process\ndef main():\n    raise SystemExit(4)\nrun_as_process(main)", 4),
])
def test_run_as_process_tunes_then_freezes_and_keeps_the_exit_code(body: str, code: int) -> None:
    rc, report, _ = _report(body)
    assert rc == code
    assert report["threshold"][0] == YOUNG_COLLECTION_THRESHOLD  # type: ignore[index]
    assert report["frozen"] > 0  # type: ignore[operator]


def test_a_plain_process_keeps_the_defaults() -> None:
    """The control: without run_as_process nothing is frozen and the young threshold is CPython's."""
    rc, report, _ = _report("import genbatch.cli.commands")
    assert rc == 0
    assert report["threshold"][0] < YOUNG_COLLECTION_THRESHOLD  # type: ignore[index]
    assert report["frozen"] == 0


@pytest.mark.parametrize("module, args", [("genbatch", ["spec-schema"]), ("beam_jobs.preprocess", ["--help"])])
def test_the_entry_points_run_as_whole_processes(module: str, args: list[str]) -> None:
    """``python -m genbatch`` (the worker's, the stage jobs' and the CLI's command) and the Beam job's."""
    rc, report, out = _report(f"import runpy, sys\nsys.argv = [{module!r}, *sys.argv[1:]]\n"
                              f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)", *args)
    assert rc == 0, out
    assert report["threshold"][0] == YOUNG_COLLECTION_THRESHOLD  # type: ignore[index]
    assert report["frozen"] > 0  # type: ignore[operator]


def test_the_genbatch_executable_is_the_whole_process_entry() -> None:
    (script,) = entry_points(group="console_scripts", name="genbatch")
    assert script.value == "genbatch.cli.commands:console_main"


def test_tune_collector_leaves_a_switched_off_or_higher_threshold_alone() -> None:
    from genbatch.cli.process import tune_collector

    before = gc.get_threshold()
    try:
        gc.set_threshold(0, 10, 10)
        tune_collector()
        assert gc.get_threshold()[0] == 0
        gc.set_threshold(50_000, 10, 10)
        tune_collector()
        assert gc.get_threshold()[0] == 50_000
        gc.set_threshold(700, 11, 12)
        tune_collector()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 11, 12)
    finally:
        gc.set_threshold(*before)


def test_start_up_done_freezes_only_in_a_whole_process() -> None:
    from genbatch.cli.process import start_up_done

    frozen = gc.get_freeze_count()
    assert start_up_done() is False  # this test process is not one run_as_process runs
    assert gc.get_freeze_count() == frozen
    body = ("import gc\nfrom genbatch.cli.process import run_as_process, start_up_done\n"
            "def main():\n    kept = [object() for _ in range(3)]\n    assert gc.get_freeze_count() == 0\n"
            "    assert start_up_done() is True\n    assert gc.get_freeze_count() > 0\n    return 0\n"
            "run_as_process(main)")
    rc, report, out = _report(body)
    assert rc == 0, out
    assert report["frozen"] > 0  # type: ignore[operator]
