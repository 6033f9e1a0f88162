"""Count prompt tokens with the pinned model's own tokenizer, without importing ``models``.

The tokenizer files (and ``config.json``) of the run's pinned registry version are fetched
through :mod:`genbatch.io.storage`, each checked against the sha256 in the version's
``card.json`` (the same integrity rule as the worker's ``fetch_verified``), into a local
temp dir, and loaded with ``transformers.AutoTokenizer`` (``local_files_only=True``,
``trust_remote_code=False``). Only tokenizer/config files are fetched: never weights.

Budget: a text model must fit prompt + new tokens in its position embeddings, so a prompt
longer than ``max_position_embeddings - max_new_tokens`` (``config.json``) is a
``prompt_over_token_budget`` reject. Image pipelines are different: their CLIP text encoder
*truncates* a long prompt to ``model_max_length`` (diffusers warns and drops the tail) rather
than failing, so the rule is not applied to image runs; the token count still feeds the cost
and the length sort, and ``model_max_length`` is reported in ``shards/_plan.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from genbatch.errors import ModelIntegrityError
from genbatch.io import storage
from genbatch.run.chat_template import render_chat
from genbatch.run.model_ref import card_uri
from genbatch.run.plain_tokenizer import plain_fast_tokenizer

log = logging.getLogger(__name__)

TokenMode = Literal["auto", "tokenizer", "estimate"]
TOKEN_MODES: tuple[str, ...] = ("auto", "tokenizer", "estimate")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "chat_template.jinja",
        "config.json",
    }
)
"""File names (within the tokenizer folder) a tokenizer may need; nothing else is fetched."""


@dataclass(frozen=True)
class TokenizerInfo:
    """What the plan reports about how tokens were counted."""

    mode: str  # "tokenizer" or "estimate"
    model_uri: str | None = None
    context_length: int | None = None  # the budget rule applies only when set (text models)
    model_max_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "token_counts": self.mode,
            "model_uri": self.model_uri,
            "context_length": self.context_length,
            "model_max_length": self.model_max_length,
        }


class TokenCounter:
    """A loaded tokenizer; ``count`` matches the worker's ``token_length`` (special tokens in).

    A plain fast tokenizer (:mod:`genbatch.run.plain_tokenizer`) is counted with the Rust ``tokenizers``
    library directly: the same ids, without importing ``transformers`` and torch (about 4 s of the
    job's start). The ``transformers`` tokenizer loads on first need: another tokenizer class, or a
    chat row (its chat template).
    """

    def __init__(self, folder: Path, info: TokenizerInfo, local_dir: Path, fast: Any = None) -> None:
        self.folder = folder
        self.info = info
        self.local_dir = local_dir
        self.fast = fast
        self._hf: Any = None

    @property
    def tokenizer(self) -> Any:
        """The ``transformers`` tokenizer of the version (loaded once, on first use)."""
        if self._hf is None:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(self.folder, local_files_only=True, trust_remote_code=False)
        return self._hf

    def count(self, text: str) -> int:
        if self.fast is not None:
            return len(self.fast.encode(text, add_special_tokens=True).ids)
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def count_chat(self, messages: list[dict[str, str]]) -> int:
        """Tokens of chat messages as the worker renders them (the model's chat template)."""
        return self.count(render_chat(self.tokenizer, messages))

    def budget(self, max_new_tokens: int) -> int | None:
        """Most prompt tokens allowed, or None when the rule does not apply."""
        context = self.info.context_length
        return None if context is None else context - max_new_tokens

    def close(self) -> None:
        shutil.rmtree(self.local_dir, ignore_errors=True)


def tokenizer_subdir(task: str) -> str:
    """Where the tokenizer lives in a registry version: the root (text) or ``tokenizer/`` (diffusers)."""
    return "tokenizer" if task == "image" else ""


def _card(model_uri: str) -> dict[str, Any] | None:
    uri = card_uri(model_uri)
    if not storage.exists(uri):
        return None
    card: dict[str, Any] = storage.read_json(uri)
    return card


def _in_tokenizer_dir(rel: str, sub: str) -> bool:
    parent, _, name = rel.rpartition("/")
    return parent == sub and name in TOKENIZER_FILES


def _fetch_verified(model_uri: str, rels: list[str], checksums: dict[str, str], dest: Path) -> None:
    for rel in rels:
        data = storage.read_bytes(storage.join(model_uri, rel))
        actual = hashlib.sha256(data).hexdigest()
        if actual != checksums[rel]:
            raise ModelIntegrityError(
                f"{model_uri}: file {rel} has sha256 {actual[:12]}…, card.json says {checksums[rel][:12]}…; "
                "the file is truncated or altered: re-register the version from a good copy"
            )
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def _context_length(model_uri: str, checksums: dict[str, str], task: str, dest: Path) -> int | None:
    if task == "image":
        return None
    if "config.json" not in checksums:
        raise ModelIntegrityError(
            f"{model_uri}: card.json lists no config.json, so the context length is unknown; "
            "re-register the version with its config (save_pretrained writes it)"
        )
    if not (dest / "config.json").is_file():
        _fetch_verified(model_uri, ["config.json"], checksums, dest)
    config = json.loads((dest / "config.json").read_text())
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(config.get(key), int):
            return int(config[key])
    raise ModelIntegrityError(
        f"{model_uri}: config.json has no max_position_embeddings (nor n_positions); cannot apply the token budget"
    )


def inspect(model_uri: str | None, task: str, mode: str = "auto") -> TokenizerInfo:
    """Decide how tokens are counted, from small JSON files only (no transformers import).

    ``mode``: ``tokenizer`` requires the tokenizer (a missing card or tokenizer fails the job),
    ``estimate`` never uses it, ``auto`` (default) uses it when the version's card lists tokenizer
    files. Storage and integrity errors always fail: only a version *without* a tokenizer falls back.
    """
    if mode not in TOKEN_MODES:
        raise ValueError(f"token mode must be one of {', '.join(TOKEN_MODES)}, got {mode!r}")
    if mode == "estimate" or model_uri is None:
        return TokenizerInfo(mode="estimate", model_uri=model_uri)
    card = _card(model_uri)
    sub = tokenizer_subdir(task)
    checksums: dict[str, str] = dict((card or {}).get("files", {}))
    rels = sorted(rel for rel in checksums if _in_tokenizer_dir(rel, sub))
    if not any(rel.rpartition("/")[2] != "config.json" for rel in rels):
        message = (f"model version {model_uri} has no card.json" if card is None
                   else f"card.json of {model_uri} lists no tokenizer files under '{sub or '.'}'")
        if mode == "tokenizer":
            raise ModelIntegrityError(f"{message}; cannot count tokens (use --token-counts=estimate to skip)")
        log.warning("%s; counting prompt tokens with the 4-characters estimate and skipping the token budget", message)
        return TokenizerInfo(mode="estimate", model_uri=model_uri)
    local = Path(tempfile.mkdtemp(prefix="genbatch-tokenizer-info-"))
    try:
        context = _context_length(model_uri, checksums, task, local)
        max_len: int | None = None
        config_rel = f"{sub}/tokenizer_config.json" if sub else "tokenizer_config.json"
        if config_rel in checksums:
            _fetch_verified(model_uri, [config_rel], checksums, local)
            value = json.loads((local / config_rel).read_text()).get("model_max_length")
            max_len = int(value) if isinstance(value, int) and value < 10**9 else None
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return TokenizerInfo(mode="tokenizer", model_uri=model_uri, context_length=context, model_max_length=max_len)


def load_token_counter(task: str, info: TokenizerInfo) -> TokenCounter | None:
    """Load the tokenizer :func:`inspect` chose (None: use the character estimate).

    Called once per DoFn instance (``setup``); ``transformers`` is imported only when the tokenizer needs it.
    """
    if info.mode != "tokenizer" or info.model_uri is None:
        return None
    model_uri = info.model_uri
    card = _card(model_uri)
    if card is None:
        raise ModelIntegrityError(f"model version {model_uri} lost its card.json while the job ran")
    sub = tokenizer_subdir(task)
    checksums: dict[str, str] = dict(card.get("files", {}))
    rels = sorted(rel for rel in checksums if _in_tokenizer_dir(rel, sub))

    local = Path(tempfile.mkdtemp(prefix="genbatch-tokenizer-"))
    folder = local / sub if sub else local
    try:
        _fetch_verified(model_uri, rels, checksums, local)
        counter = TokenCounter(folder, info, local, fast=plain_fast_tokenizer(folder))
        if counter.fast is None:
            counter.tokenizer  # noqa: B018 - load it now: a broken tokenizer fails the job here, not mid-bundle
    except BaseException:
        shutil.rmtree(local, ignore_errors=True)
        raise
    log.info("counting prompt tokens with the tokenizer of %s (context %s)", model_uri, info.context_length)
    return counter
