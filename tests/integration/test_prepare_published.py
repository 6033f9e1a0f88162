"""A published run is never rewritten: prepare on its run dir again is "done" (same spec) or a conflict (another).

One real scheduled run is built through the stage functions the DAG's operators call (prepare with the
schedule's placeholder values and started_by → validate → preprocess → cost check → shard → quality
gate → publish) on the tiny zoo model. Every check after that proves, by the bytes, mtime and inode of
every file under the output root, that nothing was touched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import RunAlreadyPublished, SpecError
from genbatch.run.state import load_run_state
from genbatch.schedule.runs import RunStart, run_start
from genbatch.stages.prepare import prepare, prepare_run

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOGICAL = dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.UTC)
Snapshot = dict[str, tuple[str, int, int]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from models.zoo.seed import ensure_zoo_registered

    path = str(tmp_path_factory.mktemp("registry") / "registry")
    ensure_zoo_registered(path)
    return path


def spec_data(workdir: Path, registry: str, **overrides: Any) -> dict[str, Any]:
    """A scheduled spec's RunSpec part as the file has it: the output URI carries the run's date."""
    return {
        "task": "text",
        "input": {"uri": str(workdir / "items.jsonl")},
        "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
        "generation": {"max_new_tokens": 8, "seed": 5},
        "sharding": {"num_shards": 1},
        "quality": {"max_reject_rate": 0.5, "min_success_rate": 0.5, "min_nonempty_rate": 0.0,
                    "max_duplicate_output_rate": 1.0},
        "output": {"uri": str(workdir / "runs" / "{{ ds }}")},
        **overrides,
    }


def nightly(name: str = "nightly") -> RunStart:
    return run_start(name, "cron", airflow_run_id="scheduled__2026-12-06T02:00:00+00:00", logical_date=LOGICAL,
                     data_interval_start=LOGICAL - dt.timedelta(days=1), data_interval_end=LOGICAL)


def prepare_scheduled(data: dict[str, Any], start: RunStart) -> str:
    from models.registry import resolve_for_spec

    return prepare_run({**data, "run_id": start.run_id}, "scheduled__2026-12-06T02:00:00+00:00",
                       resolve_model=resolve_for_spec, template_values=start.values, started_by=start.started_by)


def snapshot(root: Path) -> Snapshot:
    """Every file under ``root``: sha256, mtime and inode (a rewrite by rename changes the inode)."""
    out: Snapshot = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            st = path.stat()
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, registry: str) -> dict[str, Any]:
    """One real run of scheduled spec ``nightly`` for 2026-12-06, published."""
    from beam_jobs.preprocess import run as preprocess
    from genbatch.stages.cost_check import check_cost_ceiling
    from genbatch.stages.publish import publish
    from genbatch.stages.quality import quality_gate
    from genbatch.stages.validate import validate_input
    from models.worker import run_shard

    workdir = tmp_path_factory.mktemp("published")
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:4]]
    (workdir / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data, start = spec_data(workdir, registry), nightly()
    run_dir = prepare_scheduled(data, start)
    validate_input(run_dir)
    preprocess(["--run-dir", run_dir])
    check_cost_ceiling(run_dir)
    run_shard(run_dir, 0, devices=["cpu"])
    quality_gate(run_dir)
    publish(run_dir)
    return {"workdir": workdir, "data": data, "start": start, "run_dir": run_dir}


def test_the_scheduled_run_is_published_where_its_schedule_says(published: dict[str, Any]) -> None:
    run_dir = Path(published["run_dir"])
    assert run_dir == published["workdir"] / "runs" / "2026-12-06" / "nightly__20261206T020000"
    assert (run_dir / "_SUCCESS").is_file() and (run_dir / "manifest.json").is_file()
    state = load_run_state(str(run_dir))
    assert state.spec.output.uri == str(published["workdir"] / "runs" / "2026-12-06")
    assert state.started_by == published["start"].started_by
    assert state.started_by is not None and state.started_by["logical_date"] == "2026-12-06T02:00:00+00:00"


def test_the_same_spec_again_is_already_published_and_touches_nothing(published: dict[str, Any]) -> None:
    root = published["workdir"] / "runs"
    before = snapshot(root)
    assert len(before) > 10 and "2026-12-06/nightly__20261206T020000/_SUCCESS" in before
    with pytest.raises(RunAlreadyPublished) as exc:
        prepare_scheduled(published["data"], published["start"])
    assert "is already published with this spec" in str(exc.value) and published["run_dir"] in str(exc.value)
    # A cleared interval or a backfill over it: another Airflow run id, the same interval.
    from models.registry import resolve_for_spec

    with pytest.raises(RunAlreadyPublished):
        prepare({**published["data"], "run_id": published["start"].run_id}, "backfill__2026-12-06T02:00:00+00:00",
                resolve_model=resolve_for_spec, template_values=published["start"].values)
    assert snapshot(root) == before


def test_a_changed_spec_on_a_published_run_is_refused_naming_the_sections(published: dict[str, Any]) -> None:
    root = published["workdir"] / "runs"
    before = snapshot(root)
    changed = {**published["data"], "generation": {"max_new_tokens": 9, "seed": 5}}
    with pytest.raises(SpecError) as exc:
        prepare_scheduled(changed, published["start"])
    message = str(exc.value)
    assert "already published with a different spec (sections that differ: generation)" in message
    assert "a published run is never rewritten" in message
    two = {**changed, "quality": {**published["data"]["quality"], "max_reject_rate": 0.4}}
    with pytest.raises(SpecError, match=r"sections that differ: generation, quality\)"):
        prepare_scheduled(two, published["start"])
    assert snapshot(root) == before


def test_a_published_run_is_done_even_when_its_input_is_gone(published: dict[str, Any]) -> None:
    """prepare looks at the run dir before the input: a cleared run whose input was cleaned up skips."""
    source = Path(published["data"]["input"]["uri"])
    moved = source.with_suffix(".away")
    shutil.move(source, moved)
    try:
        with pytest.raises(RunAlreadyPublished):
            prepare_scheduled(published["data"], published["start"])
    finally:
        shutil.move(moved, source)


def test_the_scheduled_prepare_task_skips_a_published_interval(published: dict[str, Any]) -> None:
    """The DAG's prepare_run operator, run with the context Airflow hands it: a skip, not a failure or a rerun."""
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.scheduled import ScheduledPrepareRunOperator

    root = published["workdir"] / "runs"
    before = snapshot(root)
    op = ScheduledPrepareRunOperator(task_id="prepare_run", spec_name="nightly", kind="cron",
                                     spec_data=published["data"])
    context = {"run_id": "scheduled__2026-12-06T02:00:00+00:00", "logical_date": LOGICAL,
               "data_interval_start": LOGICAL - dt.timedelta(days=1), "data_interval_end": LOGICAL}
    with pytest.raises(AirflowSkipException, match="already published with this spec"):
        op.execute(context)
    assert snapshot(root) == before


def test_an_unpublished_run_dir_with_the_same_spec_prepares_again(published: dict[str, Any], registry: str) -> None:
    """A cleared run that never published resumes: prepare writes the same spec.json and clears _FAILED."""
    from genbatch.stages.failure import mark_failed

    data, start = {**published["data"]}, nightly("resumed")
    run_dir = prepare_scheduled(data, start)
    assert run_dir == str(published["workdir"] / "runs" / "2026-12-06" / "resumed__20261206T020000")
    spec_json = json.loads((Path(run_dir) / "spec.json").read_text())
    assert mark_failed(run_dir, "generate_local", "killed")
    assert (Path(run_dir) / "_FAILED").is_file()
    assert prepare_scheduled(data, start) == run_dir
    assert json.loads((Path(run_dir) / "spec.json").read_text()) == spec_json
    assert spec_json["started_by"] == start.started_by
    assert not (Path(run_dir) / "_FAILED").exists() and not (Path(run_dir) / "_SUCCESS").exists()
    # An unfinished run dir keeps the spec it started with: another one is refused before anything is written.
    changed = {**data, "generation": {"max_new_tokens": 9, "seed": 5}}
    files = snapshot(Path(run_dir))
    with pytest.raises(SpecError, match=r"was started with a different spec \(sections that differ: generation\); an "
                                        r"unfinished run resumes only with its own spec"):
        prepare_scheduled(changed, start)
    assert snapshot(Path(run_dir)) == files
    assert json.loads((Path(run_dir) / "spec.json").read_text()) == spec_json


def test_a_stage_run_again_on_a_published_run_skips_and_rewrites_nothing(published: dict[str, Any]) -> None:
    """A task cleared in the UI after publish (validate_input, cost_check, quality_gate): each skips before
    writing; the same functions called directly refuse. publish itself returns the committed manifest."""
    from airflow.sdk.exceptions import AirflowSkipException

    from genbatch.stages.cost_check import check_cost_ceiling
    from genbatch.stages.publish import publish
    from genbatch.stages.quality import quality_gate
    from genbatch.stages.validate import validate_input
    from operators.cost_check import CostCheckOperator
    from operators.genbatch_operators import QualityGateOperator, ValidateInputOperator

    root, run_dir = published["workdir"] / "runs", published["run_dir"]
    before = snapshot(root)
    for op in (ValidateInputOperator(task_id="validate_input", run_dir=run_dir),
               CostCheckOperator(task_id="cost_check", run_dir=run_dir),
               QualityGateOperator(task_id="quality_gate", run_dir=run_dir)):
        with pytest.raises(AirflowSkipException, match=f"{op.task_id} does not run again, a published run is never"):
            op.execute({})
    for stage in (validate_input, check_cost_ceiling, quality_gate):
        with pytest.raises(RunAlreadyPublished):
            stage(run_dir)
    assert publish(run_dir)["run_id"] == "nightly__20261206T020000"
    assert snapshot(root) == before


def test_a_run_recorded_before_a_spec_field_existed_is_still_the_same_spec(published: dict[str, Any]) -> None:
    """spec.json of a run published by an older genbatch lacks the fields added since (input.template,
    input.system_prompt, output.format, generation.response_schema): their defaults are not a difference."""
    spec_json = Path(published["run_dir"]) / "spec.json"
    original = spec_json.read_bytes()
    old = json.loads(original)
    for section, field in (("input", "template"), ("input", "system_prompt"), ("output", "format"),
                           ("generation", "response_schema")):
        assert field in old["spec"][section], (section, field)
        del old["spec"][section][field]
    try:
        spec_json.write_text(json.dumps(old))
        with pytest.raises(RunAlreadyPublished, match="is already published with this spec"):
            prepare_scheduled(published["data"], published["start"])
    finally:
        spec_json.write_bytes(original)
