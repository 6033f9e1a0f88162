"""The native Llama runner (torch + tokenizers, no transformers) against transformers' on the shipped models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from models.native_runner import NativeTextRunner, load_native_text_runner
from models.registry import fetch_verified, resolve
from models.runners import Item, TextRunner, load_runner
from models.zoo.seed import ensure_zoo_registered

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GEN = {"max_new_tokens": 40, "temperature": 0.0, "top_p": 1.0}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    ensure_zoo_registered(root)
    return root


def _model_dir(registry: str, name: str = "catalog-copy", version: int = 2) -> Path:
    return fetch_verified(resolve(registry, name, version=version), Path("/nonexistent"))


def _items(n: int, **params: Any) -> list[Item]:
    rows = [json.loads(x) for x in (REPO / "examples/catalog/items.jsonl").read_text().splitlines()[:n]]
    # mixed lengths (padding), a unicode row, and text that spells special tokens
    prompts = [("note: handmade | " * (i % 3)) + r["prompt"] for i, r in enumerate(rows)]
    prompts[1] += " héllo\tworld 中文 <bos> <pad> <eos>"
    return [Item(id=r["id"], prompt=p, seed=1000 + i, params=params, negative_prompt=None, record=r)
            for i, (r, p) in enumerate(zip(rows, prompts, strict=True))]


def test_the_worker_serves_a_plain_llama_without_importing_transformers(registry: str) -> None:
    model_dir = _model_dir(registry)
    probe = ("import sys; from pathlib import Path; from models.runners import Item, load_runner; "
             "r = load_runner('text', Path(sys.argv[1]), generation={'max_new_tokens': 8, 'temperature': 0.0, "
             "'top_p': 1.0}, precision='auto', device='cpu'); "
             "out = r.run_batch([Item('a', 'colour: red | item: scarf', 1, {}, None, {})]); "
             "print(type(r).__name__, 'transformers' in sys.modules, bool(out[0]['output']))")
    out = subprocess.run([sys.executable, "-c", probe, str(model_dir)], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert out.stdout.split() == ["NativeTextRunner", "False", "True"]
    forced = subprocess.run([sys.executable, "-c", probe, str(model_dir)], capture_output=True, text=True, check=True,
                            cwd=REPO, env={**os.environ, "GENBATCH_NATIVE_LLAMA": "0"})
    assert forced.stdout.split() == ["TextRunner", "True", "True"]


@pytest.mark.parametrize(("name", "version"), [("catalog-copy", 1), ("catalog-copy", 2)])
def test_native_outputs_are_transformers_outputs(registry: str, name: str, version: int) -> None:
    """Greedy, sampled and fixed-length runs give the same outputs and token counts, batch by batch."""
    model_dir = _model_dir(registry, name, version)
    native = load_native_text_runner(model_dir, generation=GEN, precision="auto", device="cpu")
    assert isinstance(native, NativeTextRunner)
    reference = TextRunner(model_dir, generation=GEN, precision="auto", device="cpu")
    items = _items(12)
    for params, fixed in [({}, False), ({"temperature": 1.2, "top_p": 0.95}, False), ({}, True)]:
        native.fixed_output_length = reference.fixed_output_length = fixed
        batch = [Item(i.id, i.prompt, i.seed, params, None, i.record) for i in items]
        for start in (0, 5):
            assert native.run_batch(batch[start:start + 7]) == reference.run_batch(batch[start:start + 7]), params
        assert [native.token_length(i.prompt) for i in items] == [reference.token_length(i.prompt) for i in items]
    assert native.work == reference.work


def test_native_prefill_and_step_are_transformers_bit_for_bit(registry: str) -> None:
    """Prefill logits and K/V (padded and unpadded groups) and a decode step's logits: the same bits as the
    transformers runner's prefill and its model's forward."""
    import torch

    model_dir = _model_dir(registry)
    native = load_native_text_runner(model_dir, generation=GEN, precision="auto", device="cpu")
    assert native is not None
    reference = TextRunner(model_dir, generation=GEN, precision="auto", device="cpu")
    ids = [reference.tokenizer(p)["input_ids"] for p in ("a red oak chair", "a navy linen sofa with two cushions")]
    for rows in (ids, ids[1:]):
        width = max(map(len, rows))
        input_ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        am = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
        position = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
        with torch.inference_mode():
            mine, mine_kv = native._prefill_kv(input_ids, am, position)
            theirs, theirs_kv = reference._prefill_kv(input_ids, am, position)
            assert torch.equal(mine, theirs)
            assert all(torch.equal(a, b) for pair in zip(mine_kv, theirs_kv, strict=True) for a, b in zip(*pair, strict=True))
    from transformers import DynamicCache

    from models.runners import InPlaceCache

    def cache_of(kv: list[tuple[Any, Any]], config: Any) -> InPlaceCache:
        keys = [k.new_zeros((k.shape[0], k.shape[1], k.shape[2] + 1, k.shape[3])) for k, _ in kv]
        values = [k.clone() for k in keys]
        for (k, v), kb, vb in zip(kv, keys, values, strict=True):
            kb[:, :, : k.shape[2]], vb[:, :, : v.shape[2]] = k, v
        return InPlaceCache(config, keys, values, kv[0][0].shape[2])

    with torch.inference_mode():
        step_mask = torch.cat([am, torch.ones((1, 1), dtype=torch.long)], dim=1)[:, None, None, :].bool()
        token, step_position = torch.tensor([5]), position[:, -1] + 1
        mine_cache, model_cache = cache_of(mine_kv, None), cache_of(theirs_kv, reference.model.config)
        got = native.direct_step(token, step_mask, step_position, mine_cache.layers)
        expected = reference.model(input_ids=token.unsqueeze(1), attention_mask=step_mask,
                                   position_ids=step_position.unsqueeze(1), cache=model_cache.cache,
                                   use_cache=True).logits[:, -1]
    assert torch.equal(got, expected)
    assert isinstance(model_cache.cache, DynamicCache) and mine_cache.cache is None


def _variant(src: Path, dest: Path, file: str, change: dict[str, Any]) -> Path:
    shutil.copytree(src, dest)
    path = dest / file
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(change)
    path.write_text(json.dumps(data))
    return dest


@pytest.mark.parametrize(("file", "change"), [
    ("config.json", {"num_key_value_heads": 2}),
    ("config.json", {"hidden_act": "gelu"}),
    ("config.json", {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 2.0}}),
    ("config.json", {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}),
    ("config.json", {"_attn_implementation": "eager"}),
    ("tokenizer_config.json", {"add_bos_token": True}),
    ("tokenizer_config.json", {"unk_token": "<never-added>"}),
    ("tokenizer_config.json", {"clean_up_tokenization_spaces": True}),
    ("generation_config.json", {"repetition_penalty": 1.3}),
    ("recipe.json", {"method": "int8_dynamic"}),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_what_the_native_runner_does_not_mirror_goes_to_transformers(
        registry: str, tmp_path: Path, file: str, change: dict[str, Any]) -> None:
    model_dir = _variant(_model_dir(registry), tmp_path / "variant", file, change)
    assert load_native_text_runner(model_dir, generation=GEN, precision="auto", device="cpu") is None


def test_settings_the_native_runner_does_not_mirror_go_to_transformers(registry: str, tmp_path: Path) -> None:
    model_dir = _model_dir(registry)
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    assert load_native_text_runner(model_dir, generation={**GEN, "response_schema": schema}, precision="auto",
                                   device="cpu") is None
    assert load_native_text_runner(model_dir, generation=GEN, precision="bf16", device="cpu") is None
    # a checkpoint holding a tensor a plain Llama does not use: transformers loads it (and says what it skipped)
    from safetensors.torch import load_file, save_file

    extra = _variant(model_dir, tmp_path / "extra", "config.json", {})
    tensors = load_file(str(extra / "model.safetensors"))
    save_file({**tensors, "model.extra.weight": tensors["model.norm.weight"].clone()}, str(extra / "model.safetensors"),
              metadata={"format": "pt"})
    assert load_native_text_runner(extra, generation=GEN, precision="auto", device="cpu") is None
    assert isinstance(load_runner("text", extra, generation=GEN, precision="auto", device="cpu"), TextRunner)


def test_chat_rows_render_with_the_models_chat_template(registry: str) -> None:
    model_dir = _model_dir(registry, "catalog-chat", 1)
    native = load_native_text_runner(model_dir, generation=GEN, precision="auto", device="cpu")
    assert isinstance(native, NativeTextRunner)
    reference = TextRunner(model_dir, generation=GEN, precision="auto", device="cpu")
    messages = [{"role": "system", "content": "Write catalog copy."}, {"role": "user", "content": "a red wool scarf"}]
    assert native.chat_prompt(messages) == reference.chat_prompt(messages)
    item = Item("c", native.chat_prompt(messages), 1, {}, None, {})
    assert native.run_batch([item]) == reference.run_batch([item])
