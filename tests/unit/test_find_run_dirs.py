"""genbatch.run.layout.find_run_dirs: how erasure, retention and `genbatch cost` find runs under a prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from genbatch.run.layout import MANIFEST, SPEC, find_run_dirs


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")


def test_runs_found_by_marker_depth_and_hidden_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "runs/a/spec.json", "runs/a/manifest.json", "runs/b/spec.json", "runs/_retention/x/spec.json",
           "runs/deep/c/spec.json", "runs/deep/c/manifest.json")
    root = str(tmp_path / "runs")
    assert find_run_dirs(root, SPEC, depth=1, skip_hidden=True) == [f"{root}/a", f"{root}/b"]
    assert find_run_dirs(root, MANIFEST) == [f"{root}/a", f"{root}/deep/c"]
    assert find_run_dirs(f"{root}/a/", MANIFEST) == [f"{root}/a"]  # a run dir itself
    assert find_run_dirs(str(tmp_path / "nothing"), MANIFEST) == []


def test_a_relative_prefix_names_the_run_dirs_as_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _touch(tmp_path, "runs/r1/manifest.json", "runs/r2/manifest.json")
    monkeypatch.chdir(tmp_path)
    assert find_run_dirs("./runs", MANIFEST) == ["runs/r1", "runs/r2"]
    assert find_run_dirs("./runs/", SPEC, depth=1) == []
