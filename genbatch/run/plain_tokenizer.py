"""Whether a tokenizer folder's ``tokenizer.json`` alone gives the ids (and text) transformers' tokenizer gives.

Then the Rust ``tokenizers`` library can stand in for it, without importing transformers and torch: the Beam
job counts tokens with it, the worker serves a plain Llama with it. Plain means ``tokenizer_class``
``PreTrainedTokenizerFast`` (a class such as Llama's rewrites the special tokens from its own flags), no
padding or truncation saved in ``tokenizer.json`` (transformers switches them off per call), and every
special token ``tokenizer_config.json`` or ``special_tokens_map.json`` names already a special added token
of ``tokenizer.json`` (else transformers adds it at load: it changes how text splits and what decoding skips).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLAIN_FAST_CLASSES = ("PreTrainedTokenizerFast",)
"""``tokenizer_class`` values whose ids are exactly ``tokenizer.json``'s (no class-specific special tokens). A
config without one is not among them: ``AutoTokenizer`` then picks the class from the model type."""
SPECIAL_TOKEN_FLAGS = ("add_bos_token", "add_eos_token", "add_prefix_space", "legacy")
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def tokenizer_config(folder: Path) -> dict[str, Any]:
    """``tokenizer_config.json`` of ``folder`` ({} when there is none)."""
    path = folder / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return config


def special_tokens(config: dict[str, Any]) -> dict[str, str]:
    """The special tokens ``tokenizer_config.json`` names, by role (extra ones as ``extra_<n>``)."""
    def text(value: Any) -> str | None:
        return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None

    named = {key: text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
    extra = [text(v) for key in ("additional_special_tokens", "extra_special_tokens")
             for v in (config.get(key) or [])]
    named.update({f"extra_{i}": t for i, t in enumerate(extra)})
    return {key: value for key, value in named.items() if value is not None}


def folder_special_tokens(folder: Path) -> dict[str, str] | None:
    """The special tokens ``tokenizer_config.json`` and ``special_tokens_map.json`` name together, or None
    when the two name different tokens for one role (which one transformers takes is its own business)."""
    from_config = special_tokens(tokenizer_config(folder))
    path = folder / "special_tokens_map.json"
    from_map = special_tokens(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else {}
    if any(from_config.get(role, token) != token for role, token in from_map.items() if not role.startswith("extra_")):
        return None
    return {**from_map, **from_config}


def plain_fast_tokenizer(folder: Path) -> Any:
    """The ``tokenizers.Tokenizer`` of ``folder`` when it gives the ids transformers' tokenizer gives, else None."""
    if not (folder / "tokenizer.json").is_file():
        return None
    config = tokenizer_config(folder)
    if config.get("tokenizer_class") not in PLAIN_FAST_CLASSES or any(k in config for k in SPECIAL_TOKEN_FLAGS):
        return None
    if not isinstance(config.get("extra_special_tokens", []), list):
        return None  # named extra tokens (a dict): transformers' own bookkeeping
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if tokenizer.padding is not None or tokenizer.truncation is not None:
        return None
    added = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    named = folder_special_tokens(folder)
    return tokenizer if named is not None and set(named.values()) <= added else None
