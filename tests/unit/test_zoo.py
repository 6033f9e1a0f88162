"""The tiny model zoo: the shipped models load from disk as safetensors and meet their quality bars."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest

from models.zoo import CATALOG_COPY_DIR, TINY_IMAGE_DIR, ZOO_DIR
from models.zoo.catalog_corpus import (
    ATTRIBUTE_KEYS,
    VALUES,
    describe,
    make_prompt,
    mentions_all,
    sample_attributes,
    training_combinations,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
ITEMS = REPO / "examples" / "catalog" / "items.jsonl"
MAX_VERSION_BYTES = 5 * 1024 * 1024
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in ITEMS.read_text(encoding="utf-8").splitlines()]


def _load_text(version: str) -> tuple[Any, Any]:
    path = CATALOG_COPY_DIR / version
    model = transformers.AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


@torch.inference_mode()
def _generate(model: Any, tokenizer: Any, prompts: list[str], batch_size: int = 125) -> list[str]:
    """Greedy, batched, left-padded; the new tokens only, stopped at EOS."""
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        out = model.generate(**enc, do_sample=False, max_new_tokens=40)
        texts += [t.strip() for t in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)]
    return texts


def _mention_rate(model: Any, tokenizer: Any) -> tuple[float, list[str]]:
    rows = _rows()
    texts = _generate(model, tokenizer, [r["prompt"] for r in rows])
    hits = sum(mentions_all(t, r["attributes"]) for t, r in zip(texts, rows, strict=True))
    return hits / len(rows), texts


# (e) the corpus helpers ---------------------------------------------------------------------------


def test_mentions_all_true_and_false_cases() -> None:
    attrs = {"colour": "red", "material": "oak", "item": "lamp"}
    assert mentions_all("A Red OAK lamp, made to last.", attrs)
    assert mentions_all("lamp: red, oak", attrs)
    assert not mentions_all("A red oak table.", attrs)  # item missing
    assert not mentions_all("A reddish oaken lamp.", attrs)  # whole words only
    assert not mentions_all("A red lamp.", attrs)  # material missing
    assert not mentions_all("", attrs)


def test_prompt_and_descriptions_are_deterministic_and_complete() -> None:
    attrs = {"colour": "teal", "material": "linen", "item": "scarf"}
    assert make_prompt(attrs) == "colour: teal | material: linen | item: scarf\ndescription:"
    with pytest.raises(ValueError, match="item"):
        make_prompt({"colour": "red", "material": "oak"})
    a, b = random.Random(7), random.Random(7)
    for _ in range(50):
        sampled = sample_attributes(a)
        assert sampled == sample_attributes(b)
        assert set(sampled) == set(ATTRIBUTE_KEYS)
        assert all(sampled[k] in VALUES[k] for k in ATTRIBUTE_KEYS)
        text = describe(sampled, a)
        assert text == describe(sampled, b)
        assert mentions_all(text, sampled)


def test_example_items_are_heldout_and_reproducible() -> None:
    rows = _rows()
    assert len(rows) == 500
    assert len({r["id"] for r in rows}) == 500
    train = set(training_combinations())
    for r in rows:
        attrs = r["attributes"]
        assert r["prompt"] == make_prompt(attrs)
        assert tuple(attrs[k] for k in ATTRIBUTE_KEYS) not in train  # unseen combination
    for i, key in enumerate(ATTRIBUTE_KEYS):  # ... made of values the model has seen
        assert {c[i] for c in train} == set(VALUES[key])
    spec = importlib.util.spec_from_file_location("make_items", REPO / "examples" / "catalog" / "make_items.py")
    assert spec is not None and spec.loader is not None
    make_items = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_items)
    assert make_items.make_rows() == rows


# (c) safetensors only, small -----------------------------------------------------------------------


def test_no_pickle_files_and_versions_are_small() -> None:
    for path in ZOO_DIR.rglob("*"):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        assert path.suffix not in PICKLE_SUFFIXES, f"pickle-format file in the zoo: {path}"
        head = path.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04"), f"zip (torch.save) file in the zoo: {path}"
        assert not (head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}), f"pickle in the zoo: {path}"
    versions = [*CATALOG_COPY_DIR.glob("v*"), *TINY_IMAGE_DIR.glob("v*")]
    assert {p.name for p in CATALOG_COPY_DIR.glob("v*")} >= {"v1", "v2"}
    assert (TINY_IMAGE_DIR / "v1").is_dir()
    for version in versions:
        size = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
        assert size <= MAX_VERSION_BYTES, f"{version} is {size} bytes"
        assert list(version.rglob("*.safetensors")), f"{version} has no safetensors"


def test_text_versions_carry_their_metadata() -> None:
    for version in ("v1", "v2"):
        path = CATALOG_COPY_DIR / version
        for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
            assert (path / name).is_file(), f"{path / name} missing"
        meta = json.loads((path / "zoo.json").read_text())
        assert meta["architecture"] == "LlamaForCausalLM"
        gen = json.loads((path / "generation_config.json").read_text())
        assert gen["eos_token_id"] is not None and gen["pad_token_id"] is not None


# (a)/(b) text quality ------------------------------------------------------------------------------


def test_catalog_copy_v2_mentions_all_attributes_on_unseen_items() -> None:
    model, tokenizer = _load_text("v2")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.padding_side == "left"
    rate, texts = _mention_rate(model, tokenizer)
    print(f"catalog-copy v2 mention rate on {len(texts)} held-out rows: {rate:.3f}; e.g. {texts[0]!r}")
    assert rate >= 0.90
    assert all(len(t.split()) <= 40 for t in texts)  # stopped at EOS, not run on


def test_catalog_copy_v1_loads_generates_and_is_worse() -> None:
    rate, texts = _mention_rate(*_load_text("v1"))
    print(f"catalog-copy v1 mention rate: {rate:.3f}; e.g. {texts[0]!r}")
    assert all(isinstance(t, str) for t in texts) and sum(bool(t) for t in texts) >= 450
    assert rate < 0.90  # the promotion tests rely on v1 failing the bar v2 passes


# (d) the image pipeline ----------------------------------------------------------------------------


def test_tiny_image_pipeline_is_seed_deterministic() -> None:
    diffusers = pytest.importorskip("diffusers")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(TINY_IMAGE_DIR / "v1", use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def render(seed: int) -> Any:
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.inference_mode():
            return pipe("a red leather backpack", num_inference_steps=4, generator=generator, output_type="np").images

    a, b, c = render(0), render(0), render(1)
    assert a.shape == (1, 64, 64, 3)
    assert (a == b).all()
    assert not (a == c).all()
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
