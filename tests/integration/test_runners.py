"""Real models (the shipped zoo): determinism across batch composition, and integrity refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genbatch.errors import ModelIntegrityError
from models.registry import fetch_verified, register_version, resolve
from models.runners import Item, TextRunner, load_runner
from models.zoo.seed import ZOO_DIR, ensure_zoo_registered

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GEN = {"max_new_tokens": 24, "temperature": 0.0, "top_p": 1.0, "num_inference_steps": 3,
       "guidance_scale": 1.0, "height": 64, "width": 64}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    ensure_zoo_registered(root)
    return root


def _items(n: int, **params: Any) -> list[Item]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n]]
    # Mixed lengths so batches need padding: every third prompt gets a longer prefix.
    return [Item(id=r["id"], prompt=("note: handmade | " * (i % 3)) + r["prompt"], seed=1000 + i, params=params,
                 negative_prompt=None, record=r) for i, r in enumerate(rows)]


def _text_runner(registry: str, native: bool = False, **gen: Any) -> Any:
    """The catalog model's runner through transformers, or (``native``) the one the worker loads: the native
    Llama runner (``models.native_runner``)."""
    model_dir = fetch_verified(resolve(registry, "catalog-copy", alias="production"), Path("/nonexistent"))
    if native:
        runner = load_runner("text", model_dir, generation={**GEN, **gen}, precision="auto", device="cpu")
        assert type(runner).__name__ == "NativeTextRunner"
        return runner
    return TextRunner(model_dir, generation={**GEN, **gen}, precision="auto", device="cpu")


def _by_batches(runner: Any, items: list[Item], size: int) -> list[str]:
    return [r["output"] for start in range(0, len(items), size) for r in runner.run_batch(items[start:start + size])]


@pytest.mark.parametrize("native", [False, True], ids=["transformers", "native"])
def test_greedy_text_does_not_depend_on_batch_composition(registry: str, native: bool) -> None:
    runner = _text_runner(registry, native)
    items = _items(12)
    alone = _by_batches(runner, items, 1)
    assert _by_batches(runner, items, 5) == alone
    assert _by_batches(runner, list(reversed(items)), 12) == list(reversed(alone))


@pytest.mark.parametrize("native", [False, True], ids=["transformers", "native"])
def test_sampled_text_depends_only_on_the_item_seed(registry: str, native: bool) -> None:
    runner = _text_runner(registry, native, temperature=1.2, top_p=0.95)
    items = _items(10)
    alone = _by_batches(runner, items, 1)
    assert _by_batches(runner, items, 4) == alone
    assert _by_batches(runner, list(reversed(items)), 10) == list(reversed(alone))
    reseeded = [Item(i.id, i.prompt, i.seed + 1, i.params, None, i.record) for i in items]
    assert _by_batches(runner, reseeded, 10) != alone


def test_prefill_shortcut_switch_turns_the_shortcut_off(registry: str) -> None:
    """``TextRunner(prefill_shortcut=False)`` (bench.worker_throughput --shortcut off) keeps the own loop
    but prefills with the full forward; the default keeps the shortcut."""
    mv = resolve(registry, "catalog-copy", alias="production")
    model_dir = fetch_verified(mv, Path("/nonexistent"))
    off = TextRunner(model_dir, generation=GEN, precision="auto", device="cpu", prefill_shortcut=False)
    assert off.own_loop and not off.last_layer_shortcut
    assert TextRunner(model_dir, generation=GEN, precision="auto", device="cpu").last_layer_shortcut


def test_own_decoding_loop_gives_generates_tokens(registry: str) -> None:
    """The runner's own loop (length-grouped prefill, with and without the last-layer shortcut,
    decode steps by ``LlamaCompute.from_transformers`` or by the model's forward, in-place cache, finished rows
    dropped) and ``model.generate`` on the same batch yield the same outputs: greedy, sampled,
    fixed length."""
    runner = _text_runner(registry, max_new_tokens=40)
    assert runner.own_loop, "the catalog model is a plain Llama: the own loop must drive it"
    assert runner.last_layer_shortcut, "a plain Llama under SDPA: prefill skips the last layer's non-final positions"
    assert runner.direct_step is not None, "a plain Llama without hooks: LlamaCompute runs its decode steps"
    direct_step = runner.direct_step
    items = _items(12)
    cases: list[tuple[dict[str, Any], bool]] = [({}, False), ({"temperature": 1.2, "top_p": 0.95}, False), ({}, True)]
    for params, fixed in cases:
        runner.fixed_output_length = fixed
        batch = [Item(i.id, i.prompt, i.seed, params, None, i.record) for i in items]
        own = runner.run_batch(batch)
        runner.last_layer_shortcut = False  # the full-forward prefill other models get
        try:
            full_prefill = runner.run_batch(batch)
        finally:
            runner.last_layer_shortcut = True
        runner.direct_step = None  # each decode step through the model's own forward
        try:
            model_steps = runner.run_batch(batch)
        finally:
            runner.direct_step = direct_step
        loop, runner.own_loop = runner.own_loop, ""
        try:
            reference = runner.run_batch(batch)
        finally:
            runner.own_loop = loop
        assert own == reference, (params, fixed)
        assert full_prefill == reference, (params, fixed)
        assert model_steps == reference, (params, fixed)
    runner.fixed_output_length = False
    # EOS stops rows early here (the catalog descriptions end well before 40 tokens), and
    # finished rows left the batch: fewer row-steps than rows x longest output.
    runner.work = dict.fromkeys(runner.work, 0)
    counts = [r["new_tokens"] for r in runner.run_batch(items)]
    assert max(counts) < 40 and runner.work["row_steps"] < len(items) * max(counts)


def test_direct_decode_step_gives_the_models_logits_bit_for_bit(registry: str) -> None:
    """One decode step of ``LlamaCompute.from_transformers`` against ``LlamaForCausalLM.forward`` on the same left-padded
    cache: the same logits, bit for bit (same operations, same order, same weights), and the same K/V
    appended; a model with a forward hook (e.g. accelerate's offloading) does not get the direct step."""
    import torch
    from transformers import DynamicCache

    from models.llama_compute import LlamaCompute
    from models.runners import InPlaceCache, direct_step_fits

    runner = _text_runner(registry, max_new_tokens=8)
    model, config = runner.model, runner.model.config
    ids = [runner.tokenizer(p)["input_ids"] for p in ("a red oak chair", "a navy linen sofa with two cushions")]
    width = max(map(len, ids))
    input_ids = torch.tensor([[0] * (width - len(r)) + r for r in ids])
    am = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in ids])[:, None]).long()
    position = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    caches = []
    with torch.inference_mode():
        for _ in range(2):
            prefill = DynamicCache(config=config)
            model(input_ids=input_ids, attention_mask=am, position_ids=position, cache=prefill, use_cache=True)
            keys = [layer.keys.new_zeros((2, layer.keys.shape[1], width + 1, layer.keys.shape[3])) for layer in prefill.layers]
            values = [k.clone() for k in keys]
            for k, v, layer in zip(keys, values, prefill.layers, strict=True):
                k[:, :, :width], v[:, :, :width] = layer.keys, layer.values
            caches.append(InPlaceCache(config, keys, values, width))
        token, step_position = torch.tensor([5, 9]), position[:, -1] + 1
        mask = torch.cat([am, torch.ones((2, 1), dtype=torch.long)], dim=1)[:, None, None, :].bool()
        expected = model(input_ids=token.unsqueeze(1), attention_mask=mask, position_ids=step_position.unsqueeze(1),
                         cache=caches[0].cache, use_cache=True).logits[:, -1]
        got = LlamaCompute.from_transformers(model)(token, mask, step_position, caches[1].layers)
    assert torch.equal(got, expected)
    for mine, theirs in zip(caches[1].layers, caches[0].layers, strict=True):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
    assert direct_step_fits(model)
    handle = model.model.layers[0].mlp.register_forward_hook(lambda *_: None)
    try:
        assert not direct_step_fits(model)
    finally:
        handle.remove()


def test_prefill_groups_cut_where_a_call_costs_less_than_its_padding() -> None:
    from models.runners import prefill_groups

    assert prefill_groups([7], 32) == [(0, 1)]
    assert prefill_groups([5, 5, 5, 6], 32) == [(0, 4)]  # 3 pad tokens < one more call
    lengths = [15] * 40 + [16] * 10 + [60, 90, 112]
    groups = prefill_groups(lengths, 32)
    assert groups[:2] == [(0, 40), (40, 50)]  # padding 40 rows by one token costs more than a call
    assert prefill_groups(lengths, 64)[0] == (0, 50)  # ... and less than a dearer call
    assert groups[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    assert prefill_groups(lengths, 10**9) == [(0, len(lengths))]  # calls too dear: one padded batch


def test_images_do_not_depend_on_batch_composition(registry: str) -> None:
    mv = resolve(registry, "tiny-image", alias="production")
    runner = load_runner("image", fetch_verified(mv, Path("/nonexistent")), generation=GEN, precision="auto", device="cpu")
    items = [Item(f"img-{i}", f"a {c} leather bag", 7 + i, {}, None, {}) for i, c in enumerate(["red", "blue", "green"])]
    alone = [np.asarray(runner.run_batch([it])[0]["image"], dtype=np.int16) for it in items]
    together = [np.asarray(r["image"], dtype=np.int16) for r in runner.run_batch(items)]
    for a, b in zip(alone, together, strict=True):
        assert np.abs(a - b).max() <= 1  # uint8 rounding of float math in a different batch shape
    assert np.abs(alone[0] - alone[1]).max() > 10


def test_tampered_weights_are_refused_naming_the_file(registry: str, tmp_path: Path) -> None:
    src = tmp_path / "model"
    shutil.copytree(ZOO_DIR / "catalog-copy" / "v2", src)
    mv = register_version(registry, "tamper-test", src)
    weights = Path(mv.uri) / "model.safetensors"
    data = weights.read_bytes()
    weights.chmod(0o644)
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors.*truncated or altered"):
        fetch_verified(mv, tmp_path / "cache")


def test_pickle_weights_are_refused_before_registration_and_before_loading(registry: str, tmp_path: Path) -> None:
    src = tmp_path / "pickled"
    shutil.copytree(ZOO_DIR / "catalog-copy" / "v2", src)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    with pytest.raises(ModelIntegrityError, match=r"pytorch_model\.bin.*pickle-format weights are not accepted"):
        register_version(registry, "pickle-test", src)
    # A pickle file smuggled into a committed version is refused at load time too.
    mv = resolve(registry, "catalog-copy", alias="production")
    version_dir = tmp_path / "copy"
    shutil.copytree(Path(mv.uri), version_dir)
    (version_dir / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    from genbatch.run.model_ref import ModelVersion

    with pytest.raises(ModelIntegrityError, match=r"extra\.pkl"):
        fetch_verified(ModelVersion(mv.name, mv.version, str(version_dir)), tmp_path / "cache")


def test_nan_images_become_item_errors(registry: str, tmp_path: Path) -> None:
    import torch

    from models.worker import run_shard
    from tests.helpers import prepared_run, write_shard

    mv = resolve(registry, "tiny-image", alias="production")
    runner = load_runner("image", fetch_verified(mv, Path("/nonexistent")), generation=GEN, precision="auto", device="cpu")
    with torch.no_grad():
        next(runner.pipe.vae.decoder.parameters()).fill_(float("nan"))  # a broken VAE yields NaN pixels
    state = prepared_run(str(tmp_path), task="image", model=mv, generation={"batch_size": 2, "num_inference_steps": 2},
                         quality={"max_error_rate": 1.0})
    write_shard(state, 0, [{"id": f"img-{i}", "prompt": "a bag", "seed": i, "params": {}, "row_index": i} for i in range(3)])
    manifest = run_shard(state.layout.root, 0, runner=runner)
    assert manifest["generated"] == 0 and manifest["errored"] == 3
    errors = [json.loads(x) for x in Path(state.layout.errors_file(0)).read_text().splitlines()]
    assert [e["id"] for e in errors] == ["img-0", "img-1", "img-2"]
    assert all("non-finite pixels" in e["error"] for e in errors)
    assert not list(Path(state.layout.outputs_dir(0)).glob("images/*.png"))



def test_whether_a_tokenizer_adds_bos_is_asked_once_per_tokenizer(registry: str) -> None:
    """render_chat asks whether the tokenizer adds BOS itself (to drop a template-written one) once per tokenizer,
    not once per chat row: the preprocess token count renders every chat row."""
    from genbatch.run import chat_template

    runner = TextRunner(fetch_verified(resolve(registry, "catalog-chat", version=1), Path("/nonexistent")),
                        generation=GEN, precision="auto", device="cpu")
    tokenizer = runner.tokenizer
    chat_template._ADDS_BOS.pop(tokenizer, None)
    first = chat_template._adds_bos(tokenizer)
    assert first == (tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id])  # the probe's answer
    chat_template._ADDS_BOS[tokenizer] = not first  # a second call that probed again would not see this
    try:
        assert chat_template._adds_bos(tokenizer) is (not first)
    finally:
        chat_template._ADDS_BOS.pop(tokenizer, None)
