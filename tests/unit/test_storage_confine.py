"""Path confinement and URI helpers: no backend needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genbatch.errors import PathNotAllowedError
from genbatch.io import storage


def test_join_keeps_style() -> None:
    assert storage.join("gs://b/base/", "x", "/y.json") == "gs://b/base/x/y.json"
    assert storage.join("gs://b", "k") == "gs://b/k"
    assert storage.join("/tmp/r", "a", "b.txt") == "/tmp/r/a/b.txt"
    assert storage.join("file:///tmp/r", "a") == "file:///tmp/r/a"
    assert storage.local_path("file:///tmp/r/a") == Path("/tmp/r/a")
    assert storage.is_gcs("gs://b/k") and not storage.is_gcs("/gs:/b")


def test_confine_accepts_paths_under_prefixes(tmp_path: Path) -> None:
    allowed = [str(tmp_path / "data"), "gs://bucket/runs"]
    assert storage.confine(str(tmp_path / "data" / "in.jsonl"), allowed) == str((tmp_path / "data" / "in.jsonl").resolve())
    assert storage.confine(f"file://{tmp_path}/data/x/../y", allowed) == str((tmp_path / "data" / "y").resolve())
    assert storage.confine("gs://bucket/runs/r1/x.json", allowed) == "gs://bucket/runs/r1/x.json"
    assert storage.confine("gs://bucket/runs", allowed) == "gs://bucket/runs"
    assert storage.confine("/anything", []) == "/anything"


@pytest.mark.parametrize(
    "path",
    [
        "{tmp}/data/../secret",
        "{tmp}/database",
        "/etc/passwd",
        "gs://bucket/runs2/x",
        "gs://other/runs/x",
        "gs://bucket/runs/../admin",
        "{tmp}/data/\x00x",
    ],
)
def test_confine_refuses_paths_outside(tmp_path: Path, path: str) -> None:
    allowed = [str(tmp_path / "data"), "gs://bucket/runs"]
    with pytest.raises(PathNotAllowedError) as info:
        storage.confine(path.format(tmp=tmp_path), allowed)
    assert "allowed" in str(info.value) or "refusing" in str(info.value)


def test_confine_refuses_symlink_escape(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    os.symlink("/etc", tmp_path / "data" / "link")
    with pytest.raises(PathNotAllowedError, match="allowed prefixes"):
        storage.confine(str(tmp_path / "data" / "link" / "passwd"), [str(tmp_path / "data")])


def test_confine_refuses_dotdot_in_gcs_even_without_prefixes() -> None:
    with pytest.raises(PathNotAllowedError):
        storage.confine("gs://b/a/../b", [])


def test_allowed_prefixes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENBATCH_ALLOWED_PREFIXES", raising=False)
    assert storage.allowed_prefixes_from_env() == []
    monkeypatch.setenv("GENBATCH_ALLOWED_PREFIXES", "")
    assert storage.allowed_prefixes_from_env() == []
    monkeypatch.setenv("GENBATCH_ALLOWED_PREFIXES", " /data , gs://b/runs,,")
    assert storage.allowed_prefixes_from_env() == ["/data", "gs://b/runs"]
