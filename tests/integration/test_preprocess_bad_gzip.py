"""A gzip input cut short, read by the Beam job itself (``input.row_rules: pipeline``): the job fails naming the
file (Beam's own gzip reader would stop quietly at the cut and the rows after it would vanish from every
count), exits 2, and the preprocess task fails without retries. Real parts: the provider's run_beam_command launching the
pipeline in a subprocess on the FnApiRunner."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from beam_jobs.raw_input import InputFile, iter_file_rows
from genbatch.errors import ShardInputError
from genbatch.stages.prepare import prepare_run
from models.registry import resolve_for_spec
from models.zoo.seed import ensure_zoo_registered

pytestmark = pytest.mark.integration

ROW = {"id": "a", "prompt": "colour: red | material: wool | item: scarf\ndescription:"}


def _cut_gzip(path: Path, rows: int = 400) -> Path:
    data = "".join(json.dumps({**ROW, "id": f"r{i}"}) + "\n" for i in range(rows)).encode()
    path.write_bytes(gzip.compress(data)[:-30])  # no end-of-stream marker
    return path


def test_the_pipelines_reader_refuses_a_cut_gzip_naming_it(tmp_path: Path) -> None:
    bad = _cut_gzip(tmp_path / "part-1.jsonl.gz")
    with pytest.raises(ShardInputError, match=r"part-1.jsonl.gz is not valid gzip \(Compressed file ended before the "
                                              r"end-of-stream marker was reached\); re-compress it"):
        list(iter_file_rows(InputFile(path=str(bad), rank=0, fmt="jsonl")))


def test_the_preprocess_task_fails_without_retries_on_a_cut_gzip(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from operators.beam import PreprocessOperator

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part-0.jsonl").write_text(json.dumps(ROW) + "\n")
    _cut_gzip(tmp_path / "in" / "part-1.jsonl.gz")
    registry = str(tmp_path / "registry")
    ensure_zoo_registered(registry)
    spec = {"task": "text", "input": {"uri": str(tmp_path / "in" / "part-*"), "row_rules": "pipeline"},
            "model": {"name": "catalog-copy", "alias": "production", "registry": registry},
            "output": {"uri": str(tmp_path / "runs")}}
    run_dir = prepare_run(spec, "cut", resolve_model=resolve_for_spec)  # validate_input skipped: its sample reads
    with pytest.raises(AirflowFailException, match="the preprocess job refused the run's input or spec"):  # too
        PreprocessOperator(task_id="preprocess", run_dir=run_dir).execute({})
    assert not (Path(run_dir) / "shards" / "_plan.json").exists()
