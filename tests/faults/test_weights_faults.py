"""Truncated, byte-flipped and pickle-substituted weights are refused before the model is built.

A copy of the shipped catalog-copy model is registered (local and gs://), then its stored
weights are damaged the way storage or an attacker would: cut at a random length, one byte
flipped at a random offset, or replaced by a pickle whose unpickling would create a marker file.
A stray pickle file next to the weights, and a card that lists one, are refused by name. The
worker (``run_shard`` with no runner: it fetches and verifies, then loads) must raise
ModelIntegrityError naming the file, never call the model loader, never unpickle anything, and
commit nothing. ``injected`` counts versions whose stored objects really changed: with
``GENBATCH_FAULTS_INJECT=0`` no damage is written, the model loads, and the test fails.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import ModelIntegrityError
from genbatch.io import storage
from genbatch.run.reconcile import reconcile
from models import registry as reg
from models import worker
from tests.faults._support import Figures, apply_damage, record
from tests.worker_harness import real_run, write_items

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ZOO_V2 = Path(__file__).resolve().parents[2] / "models" / "zoo" / "catalog-copy" / "v2"
WEIGHTS = "model.safetensors"
KINDS = ("truncated", "byte_flipped", "pickle_substituted", "stray_pickle", "card_lists_pickle")


class _Bomb:
    """Unpickling this creates the marker file: proof that nothing was unpickled is its absence."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def _register(root: str, tmp: Path) -> Any:
    src = tmp / "src"
    shutil.copytree(ZOO_V2, src)
    return reg.register_version(root, "victim", src)


def _damage(kind: str, mv: Any, rng: random.Random, marker: Path) -> tuple[str, dict[str, bytes]]:
    """The damaged objects to write over the stored version, and the file the refusal must name."""
    weights_uri = storage.join(mv.uri, WEIGHTS)
    stray_uri = storage.join(mv.uri, "pytorch_model.bin")
    bomb = pickle.dumps(_Bomb(marker))
    data = storage.read_bytes(weights_uri)
    if kind == "truncated":
        return WEIGHTS, {weights_uri: data[: rng.randrange(0, len(data))]}
    if kind == "byte_flipped":
        pos = rng.randrange(len(data))
        return WEIGHTS, {weights_uri: data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]}
    if kind == "pickle_substituted":
        return WEIGHTS, {weights_uri: bomb}
    if kind == "stray_pickle":
        # On GCS only card-listed files are fetched; a stray one is never read.
        return "<not fetched>" if storage.is_gcs(mv.uri) else "pytorch_model.bin", {stray_uri: bomb}
    card_uri = storage.join(mv.uri, reg.CARD)
    card = storage.read_json(card_uri)
    card["files"]["pytorch_model.bin"] = "0" * 64
    return "pytorch_model.bin", {stray_uri: bomb, card_uri: json.dumps(card).encode()}


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_damaged_weights_are_refused_before_the_model_is_built(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, faults_repeat: int, faults_seed: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(faults_seed + (1 if backend == "gcs" else 0))
    base = str(tmp_path / "reg") if backend == "local" else f"gs://{request.getfixturevalue('gcs_bucket')}/reg"
    loads: list[Any] = []

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        pytest.fail("the model was built: the weights were not refused")

    monkeypatch.setattr(worker, "load_runner", must_not_load)
    for rep in range(faults_repeat):
        for kind in KINDS:
            case = tmp_path / f"{kind}-{rep}"
            case.mkdir()
            marker = case / "UNPICKLED"
            root = storage.join(base, f"{kind}-{rep}")
            mv = _register(root, case)
            named, damaged = _damage(kind, mv, rng, marker)
            changed = sorted(uri for uri, data in damaged.items() if apply_damage(uri, data))
            injected = int(bool(changed))  # this version is damaged
            state = real_run(str(case / "out"), mv, root, run_id="weights", generation={"batch_size": 4})
            write_items(state, [{"id": f"i{i}", "prompt": "colour: red\ndescription:", "seed": i, "params": {},
                                 "row_index": i} for i in range(4)])
            t0 = time.monotonic()
            if named == "<not fetched>":
                # The stray object is never downloaded, so nothing can load it: the run is fine.
                fetched: list[str] = []

                def no_model(task: str, model_dir: Path, fetched: list[str] = fetched, **kwargs: Any) -> _NoModel:
                    fetched.extend(p.name for p in Path(model_dir).rglob("*"))
                    return _NoModel()

                monkeypatch.setattr(worker, "load_runner", no_model)
                worker.run_shard(state.layout.root, 0, device="cpu")
                monkeypatch.setattr(worker, "load_runner", must_not_load)
                refused = False
                # Observed: the stray object is stored in the version, and the worker fetched without it.
                stray = storage.join(mv.uri, "pytorch_model.bin")
                observed = int(storage.exists(stray) and bool(fetched) and "pytorch_model.bin" not in fetched)
            else:
                with pytest.raises(ModelIntegrityError) as info:
                    worker.run_shard(state.layout.root, 0, device="cpu")
                refused = named in str(info.value)
                observed = int(refused)
                assert refused, str(info.value)
                assert storage.list_uris(state.layout.path("outputs")) == [], "a refused model committed outputs"
                assert reconcile(state.layout.root).items_duplicated == 0
            assert not loads, "the model loader ran on damaged weights"
            assert not marker.exists(), "a pickle was unpickled"
            record(Figures(f"weights-{kind}", injected=injected, observed=observed,
                           seconds=round(time.monotonic() - t0, 3),
                           detail={"backend": backend, "refused": refused, "changed": changed,
                                   "message": "" if not refused else str(info.value)[:160]}))
            assert injected == 1 and observed == injected, f"{kind}: damaged {changed}, observed {observed}"


class _NoModel:
    """A runner that generates nothing useful; used only where the damage is never read."""

    def token_length(self, prompt: str) -> int:
        return 1

    def run_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        return [{"output": json.dumps(it.id), "new_tokens": 1} for it in items]
