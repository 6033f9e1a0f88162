"""Token counting with the pinned model's tokenizer, read from the registry through genbatch.io.storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_jobs import tokens as tokenizing
from genbatch.errors import ModelIntegrityError
from models.registry import register_version

REPO = Path(__file__).resolve().parents[2]
TEXT = REPO / "models" / "zoo" / "catalog-copy" / "v1"
IMAGE = REPO / "models" / "zoo" / "tiny-image" / "v1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("registry"))
    register_version(root, "catalog-copy", TEXT)
    register_version(root, "tiny-image", IMAGE)
    return root


def test_text_model_counts_like_the_worker_and_budget_is_context_minus_new_tokens(registry: str) -> None:
    uri = f"{registry}/catalog-copy/versions/1"
    info = tokenizing.inspect(uri, "text")
    assert info.mode == "tokenizer" and info.context_length == 128
    counter = tokenizing.load_token_counter("text", info)
    assert counter is not None
    try:
        from transformers import AutoTokenizer

        reference = AutoTokenizer.from_pretrained(TEXT, local_files_only=True)
        prompt = "colour: red | material: wool | item: scarf\ndescription:"
        assert counter.count(prompt) == len(reference(prompt, add_special_tokens=True)["input_ids"])
        assert counter.budget(48) == 80
    finally:
        counter.close()
    assert not counter.local_dir.exists()


def test_image_model_counts_with_clip_tokenizer_but_has_no_budget(registry: str) -> None:
    info = tokenizing.inspect(f"{registry}/tiny-image/versions/1", "image")
    assert info.mode == "tokenizer" and info.context_length is None and info.model_max_length == 32
    counter = tokenizing.load_token_counter("image", info)
    assert counter is not None
    try:
        assert counter.count("a red square") >= 3 and counter.budget(48) is None
    finally:
        counter.close()


def test_no_card_falls_back_to_the_estimate_unless_the_tokenizer_is_required(tmp_path: Path) -> None:
    assert tokenizing.inspect(str(tmp_path / "nowhere"), "text").mode == "estimate"
    assert tokenizing.inspect(None, "text").mode == "estimate"
    assert tokenizing.load_token_counter("text", tokenizing.inspect(None, "text")) is None
    with pytest.raises(ModelIntegrityError, match="no card.json"):
        tokenizing.inspect(str(tmp_path / "nowhere"), "text", "tokenizer")
    with pytest.raises(ValueError, match="token mode"):
        tokenizing.inspect(None, "text", "sometimes")


def test_estimate_mode_never_reads_the_registry(registry: str) -> None:
    assert tokenizing.inspect(f"{registry}/catalog-copy/versions/1", "text", "estimate").mode == "estimate"


def test_altered_tokenizer_file_is_refused(tmp_path: Path) -> None:
    root = str(tmp_path / "reg")
    mv = register_version(root, "catalog-copy", TEXT)
    tok = Path(mv.uri) / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<unk>"', '"<UNK>"', 1) + " ")
    info = tokenizing.inspect(mv.uri, "text")
    with pytest.raises(ModelIntegrityError, match="tokenizer.json"):
        tokenizing.load_token_counter("text", info)


def test_config_without_context_length_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in TEXT.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "config.json").read_text())
    del config["max_position_embeddings"]
    (src / "config.json").write_text(json.dumps(config))
    mv = register_version(str(tmp_path / "reg"), "catalog-copy", src)
    with pytest.raises(ModelIntegrityError, match="max_position_embeddings"):
        tokenizing.inspect(mv.uri, "text")


def test_a_plain_fast_tokenizer_counts_without_transformers_and_exactly_like_it(registry: str) -> None:
    """The Rust tokenizer directly (the job's start skips the transformers and torch imports): the same counts
    as the worker's tokenizer on prompts with unicode, tabs, newlines and special-token text."""
    import subprocess
    import sys

    uri = f"{registry}/catalog-copy/versions/1"
    probe = ("from beam_jobs import tokens as t; import sys; c = t.load_token_counter('text', t.inspect(sys.argv[1], "
             "'text')); c.count('x'); print(c.fast is not None, 'transformers' in sys.modules, 'torch' in sys.modules); "
             "c.close()")
    out = subprocess.run([sys.executable, "-c", probe, uri], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["True", "False", "False"]
    counter = tokenizing.load_token_counter("text", tokenizing.inspect(uri, "text"))
    assert counter is not None and counter.fast is not None
    try:
        from transformers import AutoTokenizer

        reference = AutoTokenizer.from_pretrained(TEXT, local_files_only=True)
        prompts = ["colour: red | material: wool | item: scarf\ndescription:", "héllo\tworld  <s> <bos> 123",
                   "Stuhl, rot é 中文 😀 { single }", "", "  leading and trailing  ", "line1\r\nline2"]
        for prompt in prompts:
            assert counter.count(prompt) == len(reference(prompt, add_special_tokens=True)["input_ids"]), prompt
    finally:
        counter.close()


def test_other_tokenizer_classes_keep_the_transformers_tokenizer(registry: str) -> None:
    counter = tokenizing.load_token_counter("image", tokenizing.inspect(f"{registry}/tiny-image/versions/1", "image"))
    assert counter is not None
    try:
        assert counter.fast is None  # CLIPTokenizer: its class adds the special tokens, not tokenizer.json
        assert counter.count("a red square") == len(counter.tokenizer("a red square")["input_ids"])
    finally:
        counter.close()
