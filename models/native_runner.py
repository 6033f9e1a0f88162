"""The worker's text runner for a plain Llama from torch and ``tokenizers`` alone: no transformers import.

Importing transformers costs a CPU worker about 2.5 s per start (its lazy module scan, torch.dynamo and
torch.distributed, scipy), as much as the model's own load: for a small run, the fixed cost. Where the
model's files say it runs exactly as transformers would run it (``load_native_text_runner``'s checks),
the worker serves it with ``LlamaCompute`` over the safetensors and the Rust tokenizer of
``tokenizer.json``; any other model, setting or tokenizer goes through transformers as before, and
``GENBATCH_NATIVE_LLAMA=0`` sends every model there. ``tests/integration/test_native_runner.py`` holds
its outputs to transformers'.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genbatch.run.chat_template import render_chat
from genbatch.run.plain_tokenizer import folder_special_tokens, plain_fast_tokenizer, tokenizer_config
from models.llama_compute import LlamaCompute, load_llama_compute, native_unfit_reason, read_json
from models.runners import OWN_LOOP_SETTINGS, TextRunner, pick_dtype

log = logging.getLogger(__name__)


class PlainTokenizer:
    """What ``TextRunner`` asks of a tokenizer, from a plain ``tokenizer.json`` (:mod:`genbatch.run.plain_tokenizer`):
    the Rust tokenizer (``backend_tokenizer``), the pad and EOS ids, and ``batch_decode``."""

    is_fast = True

    def __init__(self, folder: Path, backend: Any) -> None:
        self.backend_tokenizer = backend
        named = folder_special_tokens(folder) or {}  # plain_fast_tokenizer checked that the two files agree
        ids = {role: backend.token_to_id(text) for role, text in named.items()}
        self.eos_token_id: int | None = ids.get("eos_token")
        pad = ids.get("pad_token")
        # as TextRunner sets it on a transformers tokenizer without a pad token
        self.pad_token_id: int | None = pad if pad is not None else self.eos_token_id
        self.special_ids = {i for i in ids.values() if i is not None}

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """Each row's text, as transformers' ``batch_decode`` gives it (its special tokens are these)."""
        rows = sequences.tolist() if hasattr(sequences, "tolist") else [list(r) for r in sequences]
        if skip_special_tokens:
            rows = [[t for t in row if t not in self.special_ids] for row in rows]
        texts: list[str] = self.backend_tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)
        return texts


class NativeTextRunner(TextRunner):
    """``TextRunner``'s own loop (length-grouped prefill, in-place cache, direct decode steps, finished rows
    leaving) over ``LlamaCompute`` and ``PlainTokenizer`` instead of transformers' model and tokenizer."""

    direct_step: LlamaCompute  # always set: it runs the decode steps and the prefill

    def __init__(self, model_dir: Path, *, generation: dict[str, Any], device: str, compute: LlamaCompute,
                 tokenizer: PlainTokenizer, eos: Any) -> None:
        import torch

        self.torch, self.device, self.generation, self.model_dir = torch, device, generation, model_dir
        self.tokenizer: Any = tokenizer
        self.model = None
        self.own_loop, self.last_layer_shortcut, self.direct_step = "native", True, compute
        self.schema_constraint = None
        self.mask_4d = True  # SDPA: the step's boolean mask, made additive once per step
        self._chat_tokenizer: Any = None
        self._start_loop(eos)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Chat messages through the model's chat template (transformers' tokenizer, loaded at the first chat row)."""
        if self._chat_tokenizer is None:
            from transformers import AutoTokenizer

            self._chat_tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True,
                                                                 trust_remote_code=False)
        return render_chat(self._chat_tokenizer, messages)

    def _prefill_kv(self, input_ids: Any, am: Any, position: Any) -> tuple[Any, list[tuple[Any, Any]]]:
        return self.direct_step.prefill(input_ids, am, position)

    def _cache_config(self) -> Any:
        return None


def runner_unfit_reason(model_dir: Path, generation: dict[str, Any], dtype: Any) -> str:
    """Why the native runner cannot serve this model and these settings as transformers would ("" when it can)."""
    import torch

    from models.optimize.quantize import read_recipe

    config = tokenizer_config(model_dir)
    generation_config = read_json(model_dir / "generation_config.json")
    checks = {
        "a response schema (its token mask reads transformers' tokenizer)": bool(generation.get("response_schema")),
        "an optimisation recipe": read_recipe(model_dir) is not None,
        "not float32": dtype != torch.float32,
        "generation settings the own loop does not apply": not set(generation_config) <= OWN_LOOP_SETTINGS,
        "clean_up_tokenization_spaces": bool(config.get("clean_up_tokenization_spaces", False)),
    }
    return next((reason for reason, failed in checks.items() if failed), "")


def load_native_text_runner(model_dir: Path, *, generation: dict[str, Any], precision: str,
                            device: str) -> NativeTextRunner | None:
    """The native runner for this model, or None (then transformers serves it; the log says why)."""
    model_dir = Path(model_dir)
    dtype = pick_dtype(precision, device)
    reason = native_unfit_reason(model_dir) or runner_unfit_reason(model_dir, generation, dtype)
    backend = None if reason else plain_fast_tokenizer(model_dir)
    if backend is None:
        log.info("text runner through transformers: %s", reason or "the tokenizer is not a plain tokenizer.json")
        return None
    tokenizer = PlainTokenizer(model_dir, backend)
    config = read_json(model_dir / "config.json")
    generation_config = read_json(model_dir / "generation_config.json")
    # transformers' generation_config: generation_config.json when there is one, else config.json's tokens
    eos = (generation_config if (model_dir / "generation_config.json").is_file() else config).get("eos_token_id")
    if (eos if eos is not None else tokenizer.eos_token_id) is None or tokenizer.pad_token_id is None:
        log.info("text runner through transformers: no EOS or pad token")
        return None
    try:
        compute = load_llama_compute(model_dir, dtype, device)
    except ValueError as exc:  # tensors missing or left over: transformers loads it and reports them
        log.info("text runner through transformers: %s", exc)
        return None
    log.info("text runner: native Llama (torch and tokenizers, no transformers)")
    return NativeTextRunner(model_dir, generation=generation, device=device, compute=compute, tokenizer=tokenizer,
                            eos=eos)
