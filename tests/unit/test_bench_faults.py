"""bench/faults.py's verdicts: a mismatch, a class that injected nothing, or any loss fails the benchmark;
with injection off, a fault test that passes is named."""

from __future__ import annotations

from pathlib import Path

from bench.faults import outcomes, summarise, verdict


def _rec(cls: str, injected: int, observed: int, **over: int) -> dict[str, object]:
    return {"fault_class": cls, "injected": injected, "observed": observed, "lost": 0, "doubled": 0,
            "redone": 0, "partial_reads": 0, **over}


def test_a_clean_matrix_passes() -> None:
    records = [_rec("gcs-writes", 8, 8), _rec("disk-full", 1, 1)]
    assert verdict(summarise(records), len(records)) == []


def test_mismatch_zero_injected_losses_and_no_figures_each_fail() -> None:
    assert verdict(summarise([_rec("gcs-writes", 8, 7)]), 1) == ["injected!=observed"]
    assert verdict(summarise([_rec("worker-race", 0, 0)]), 1) == ["injected!=observed"]
    assert verdict(summarise([_rec("a", 1, 1, lost=1, doubled=2)]), 1) == ["lost", "doubled"]
    assert verdict(summarise([]), 0) == ["no figures"]


def test_outcomes_reads_failures_errors_and_passes_from_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.faults.test_a" name="test_fails"><failure message="AssertionError: injected 0">'
        "trace</failure></testcase>"
        '<testcase classname="tests.faults.test_a" name="test_errors"><error message="fixture broke"/></testcase>'
        '<testcase classname="tests.faults.test_b" name="test_passes"/>'
        "</testsuite></testsuites>")
    assert outcomes(junit) == {
        "tests.faults.test_a::test_fails": "failure: AssertionError: injected 0",
        "tests.faults.test_a::test_errors": "error: fixture broke",
        "tests.faults.test_b::test_passes": "passed",
    }
