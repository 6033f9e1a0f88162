"""Model registry on both backends: immutable versions, compare-and-swap aliases, audit, CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from genbatch.cli.commands import main as cli_main
from genbatch.io import storage
from models import registry as reg

pytestmark = pytest.mark.integration


def _model_dir(tmp_path: Path, tag: str) -> Path:
    d = tmp_path / f"src-{tag}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"tag": tag}))
    (d / "model.safetensors").write_bytes(tag.encode() * 100)
    return d


def test_register_resolve_and_card(storage_root: str, tmp_path: Path) -> None:
    r = storage.join(storage_root, "registry")
    v1 = reg.register_version(r, "m", _model_dir(tmp_path, "a"), lineage={"source": "test"})
    v2 = reg.register_version(r, "m", _model_dir(tmp_path, "b"))
    assert (v1.version, v2.version) == (1, 2)
    assert reg.list_versions(r, "m") == [1, 2]
    card = reg.read_card(v2)
    assert set(card["files"]) == {"config.json", "model.safetensors"}
    assert len(card["files"]["model.safetensors"]) == 64
    reg.set_alias(r, "m", "production", 1, reason="first")
    assert reg.resolve(r, "m", alias="production") == v1
    with pytest.raises(Exception, match="no alias 'canary'"):
        reg.resolve(r, "m", alias="canary")


def test_racing_promotions_exactly_one_wins_every_time(storage_root: str, tmp_path: Path) -> None:
    r = storage.join(storage_root, "registry")
    for i in range(5):
        reg.register_version(r, "race", _model_dir(tmp_path, f"v{i}"))
    reg.set_alias(r, "race", "production", 1, reason="start")
    trials, contenders = 50, 4
    for trial in range(trials):
        start = reg.read_aliases(r, "race")["production"]
        barrier = threading.Barrier(contenders)
        outcomes: list[tuple[int, str]] = []
        lock = threading.Lock()

        def contend(version: int, start: int = start, barrier: threading.Barrier = barrier,
                    outcomes: list[tuple[int, str]] = outcomes, lock: threading.Lock = lock) -> None:
            barrier.wait()
            try:
                reg.promote(r, "race", version, reason="race", expect_production=start)
                result = "won"
            except reg.AliasConflictError:
                result = "lost"
            with lock:
                outcomes.append((version, result))

        candidates = [v for v in range(1, 6) if v != start][:contenders]
        threads = [threading.Thread(target=contend, args=(v,)) for v in candidates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [v for v, res in outcomes if res == "won"]
        assert len(winners) == 1, (trial, outcomes)
        aliases = reg.read_aliases(r, "race")
        assert aliases["production"] == winners[0] and aliases["previous"] == start


def test_cli_register_promote_rollback_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = str(tmp_path / "registry")
    for tag in ("a", "b"):
        assert cli_main(["model", "--registry", r, "register", str(_model_dir(tmp_path, tag)), "--name", "cat"]) == 0
    assert cli_main(["model", "--registry", r, "alias", "cat", "production", "1"]) == 0
    assert cli_main(["model", "--registry", r, "promote", "cat", "2", "--reason", "better"]) == 0
    assert reg.read_aliases(r, "cat") == {"production": 2, "previous": 1}
    assert cli_main(["model", "--registry", r, "rollback", "cat"]) == 0
    assert reg.read_aliases(r, "cat") == {"production": 1, "rolled_back": 2}
    capsys.readouterr()
    assert cli_main(["model", "--registry", r, "alias", "cat", "production", "2", "--expect", "2"]) == 2
    assert "another promotion or rollback won the race" in capsys.readouterr().err
    events = [e["event"] for e in reg.read_audit(r, "cat")]
    assert events == ["register", "register", "alias", "promote", "rollback"]
    promote = next(e for e in reg.read_audit(r, "cat") if e["event"] == "promote")
    assert promote["before"] == {"production": 1} and promote["after"] == {"production": 2, "previous": 1}
    assert cli_main(["model", "--registry", r, "rollback", "cat"]) == 2  # nothing left to roll back to
