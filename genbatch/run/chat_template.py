"""Whether a registered text model version has a chat template, and its hash (part of the run's params hash).

A Hugging Face tokenizer keeps its chat template in ``chat_template.jinja`` (transformers 5) or under
``chat_template`` in ``tokenizer_config.json``; the worker renders chat rows with it, so the run records
which template that was. Read through storage, so a ``gs://`` registry works the same.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from typing import Any

from genbatch.io import storage

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def chat_template_sha256(model_uri: str) -> str | None:
    """sha256 of the version's chat template text, or None when it has none."""
    jinja = storage.join(model_uri, CHAT_TEMPLATE_FILE)
    if storage.exists(jinja):
        return hashlib.sha256(storage.read_bytes(jinja)).hexdigest()
    config = storage.join(model_uri, "tokenizer_config.json")
    if not storage.exists(config):
        return None
    try:
        template = json.loads(storage.read_bytes(config)).get("chat_template")
    except (ValueError, AttributeError):
        return None  # the worker's tokenizer load reports a broken config
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text of chat ``messages``: the tokenizer's own chat template, with the generation prompt.

    The text is then tokenized as any prompt is (special tokens added), so a template that writes the BOS
    token itself has it removed here when the tokenizer adds one anyway: one BOS, as the model was trained.
    The worker and the preprocess token count both call this, so budgets match what runs.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the model's tokenizer has no chat template, so chat messages cannot be rendered")
    text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]
    return text


# Whether a tokenizer adds BOS itself: probed once per tokenizer, not once per chat row.
_ADDS_BOS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _adds_bos(tokenizer: Any) -> bool:
    known = _ADDS_BOS.get(tokenizer)
    if known is None:
        ids = tokenizer("", add_special_tokens=True)["input_ids"]
        known = _ADDS_BOS[tokenizer] = bool(ids) and ids[0] == getattr(tokenizer, "bos_token_id", None)
    return known
