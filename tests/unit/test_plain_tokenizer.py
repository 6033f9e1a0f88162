"""When ``tokenizer.json`` alone stands in for transformers' tokenizer (the Beam job's counts, the native runner)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from genbatch.run.plain_tokenizer import plain_fast_tokenizer, special_tokens

TEXT = Path(__file__).resolve().parents[2] / "models" / "zoo" / "catalog-copy" / "v2"


def _copy(tmp_path: Path, file: str, change: dict[str, Any]) -> Path:
    folder = tmp_path / "tok"
    shutil.copytree(TEXT, folder)
    data = json.loads((folder / file).read_text())
    data.update(change)
    (folder / file).write_text(json.dumps(data))
    return folder


def test_the_shipped_tokenizer_is_plain_and_names_its_special_tokens() -> None:
    assert plain_fast_tokenizer(TEXT) is not None
    config = json.loads((TEXT / "tokenizer_config.json").read_text())
    assert special_tokens(config) == {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
    assert special_tokens({"eos_token": {"content": "</s>"}, "additional_special_tokens": ["<x>"]}) == {
        "eos_token": "</s>", "extra_0": "<x>"}


@pytest.mark.parametrize(("file", "change"), [
    ("tokenizer_config.json", {"tokenizer_class": "LlamaTokenizerFast"}),
    ("tokenizer_config.json", {"add_bos_token": False}),
    ("tokenizer_config.json", {"unk_token": "<not-an-added-token>"}),
    ("tokenizer_config.json", {"extra_special_tokens": {"image": "<img>"}}),
    ("special_tokens_map.json", {"eos_token": "<pad>"}),
    ("special_tokens_map.json", {"unk_token": "<not-an-added-token>"}),
    ("tokenizer.json", {"padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None,
                                    "pad_id": 0, "pad_type_id": 0, "pad_token": "<pad>"}}),
    ("tokenizer.json", {"truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}}),
], ids=["class", "bos-flag", "special-not-added", "named-extras", "map-disagrees", "map-not-added", "padding",
        "truncation"])
def test_what_transformers_would_change_is_not_plain(tmp_path: Path, file: str, change: dict[str, Any]) -> None:
    """Each of these makes transformers' ids or decoded text differ from the bare ``tokenizer.json``'s."""
    assert plain_fast_tokenizer(_copy(tmp_path, file, change)) is None
