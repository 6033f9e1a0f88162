"""The CLI fails fast on a bad spec, before Airflow or any model is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbatch.cli.commands import main


def test_bad_spec_fails_before_any_work_listing_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text("task: video\ninput: {uri: x.jsonl, format: xml}\nmodel: {name: m, alias: production}\n"
                    "sharding: {num_shards: 0}\n")
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "3 invalid field(s)" in err and "task" in err and "input.format" in err and "sharding.num_shards" in err
    assert "Traceback" not in err
    assert not (tmp_path / ".genbatch").exists(), "no Airflow home or registry was set up"
