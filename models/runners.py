"""Generation runners: load a verified model once per process, then run batches.

Loading (``load``) is separate from running a batch (``run_batch``), as in Beam's
RunInference, so tests can hand in a tiny model and the worker never reloads per item.
Heavy imports (torch, transformers, diffusers) happen inside the functions on purpose.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from genbatch.run.chat_template import render_chat
from models.constrained import RowStates, SchemaConstraint
from models.llama_compute import LlamaCompute

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One unit of work read from a shard file."""

    id: str
    prompt: str
    seed: int
    params: dict[str, Any]
    negative_prompt: str | None
    record: dict[str, Any]


class Runner(Protocol):
    def run_batch(self, items: list[Item]) -> list[dict[str, Any]]: ...


def pick_dtype(precision: str, device: str) -> Any:
    import torch

    if precision == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class TextRunner:
    """A causal LM + tokenizer; greedy decoding is batched, sampling is seeded per item.

    Decoding runs genbatch's own loop around the model's forward (``_decode``) where the model
    allows it (``supports_own_loop``), else ``model.generate``. The loop yields the tokens
    ``generate`` yields for the same left-padded batch, and is faster on mixed-length batches
    (profile in docs/benchmarks.md, worker section):

    - prefill runs in length groups: the batch's rows sorted by length and cut wherever one more
      forward call costs less than the padding it removes (``prefill_groups``);
    - the KV cache is one preallocated, left-padded buffer written in place (``generate``'s
      dynamic cache copies the whole cache with ``torch.cat`` at every step);
    - rows that have finished (EOS) leave the batch (their cache rows are dropped), so they stop
      costing decode steps;
    - for a plain Llama, prefill runs the last layer in full only at each row's final position
      and computes just the cached K/V for the others (``_prefill``, ``last_layer_shortcut_fits``).
    """

    # A forward call's fixed cost in prompt tokens of that call (CPU, catalog model: ~0.5 ms of
    # Python and dispatch per call against ~15 µs per prompt token); a GPU pays far more per call.
    CALL_COST_TOKENS = {"cpu": 32, "cuda": 4096}
    # Drop finished rows from the batch once this share of its rows has finished.
    COMPACT_FRACTION = 0.125

    fixed_output_length = False  # benchmarks set it: every row decodes max_new_tokens (no early EOS)

    def __init__(self, model_dir: Path, *, generation: dict[str, Any], precision: str, device: str,
                 prefill_shortcut: bool = True, direct_step: bool = True) -> None:
        """``prefill_shortcut=False`` turns the last-layer prefill shortcut off (the benchmark's A/B)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.generation = generation
        self.tokenizer = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_dir,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=pick_dtype(precision, device),
        )
        from models.optimize import apply_recipe, read_recipe

        # An optimised variant is its parent's safetensors plus a load-time recipe (e.g. int8): apply it.
        self.model = apply_recipe(model.to(device).eval(), read_recipe(Path(model_dir)), device)
        self.own_loop = supports_own_loop(self.model)
        self.last_layer_shortcut = prefill_shortcut and bool(self.own_loop) and last_layer_shortcut_fits(self.model)
        self.direct_step = (LlamaCompute.from_transformers(self.model) if direct_step and self.last_layer_shortcut
                            and direct_step_fits(self.model) else None)
        self._start_loop(self.model.generation_config.eos_token_id)
        schema = generation.get("response_schema")
        self.schema_constraint = (SchemaConstraint(schema, self.tokenizer, self.eos_ids.tolist(),
                                                   int(self.model.config.vocab_size)) if schema else None)
        self.mask_4d = getattr(self.model.config, "_attn_implementation", "") == "sdpa"
        probe = ["A red oak chair, 2 pieces | colour: navy", "héllo\tworld  <s> 123"]
        if self.tokenizer.is_fast and self._encode(probe) != [list(x) for x in self.tokenizer(probe)["input_ids"]]:
            self.tokenizer_backend = False

    def _start_loop(self, eos: Any) -> None:
        """The loop's EOS ids (the generation config's, else the tokenizer's), call cost and counters."""
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos_ids = self.torch.tensor(sorted({int(e) for e in (eos if isinstance(eos, list) else [eos])}),
                                         device=self.device)
        self.call_cost = self.CALL_COST_TOKENS["cuda" if str(self.device).startswith("cuda") else "cpu"]
        # Deterministic work counters (the benchmark reads them): prompt tokens fed to prefill
        # (real + pad), prefill forward calls, and row-steps decoded (one row, one new token).
        self.work = {"prefill_tokens": 0, "prefill_calls": 0, "row_steps": 0}
        self._encoded: dict[str, list[int]] = {}

    # Token ids that token_length computed (the worker's sort key), reused by the next run_batch
    # of that prompt instead of tokenizing twice. Bounded: the worker holds one window at a time.
    ENCODED_CACHE_ITEMS = 65536
    tokenizer_backend = True  # False when the Rust tokenizer's ids differ from the wrapper's (probed at load)

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Chat messages as prompt text, through this model's own chat template."""
        return render_chat(self.tokenizer, messages)

    def token_length(self, prompt: str) -> int:
        ids = self._encode([prompt])[0]
        if len(self._encoded) >= self.ENCODED_CACHE_ITEMS:
            self._encoded.clear()
        self._encoded[prompt] = ids
        return len(ids)

    def _encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids with special tokens, as ``tokenizer(prompts)`` gives them."""
        fast = self.tokenizer.is_fast and self.tokenizer_backend
        backend = getattr(self.tokenizer, "backend_tokenizer", None) if fast else None
        # The Rust tokenizer directly: the same ids without the per-call wrapper, unless a padded
        # call left padding/truncation switched on in it (the wrapper call below switches it off).
        if backend is not None and backend.padding is None and backend.truncation is None:
            return [e.ids for e in backend.encode_batch(prompts, add_special_tokens=True)]
        return [list(x) for x in self.tokenizer(prompts, add_special_tokens=True)["input_ids"]]

    def _ids(self, prompts: list[str]) -> list[list[int]]:
        cached = [self._encoded.pop(p, None) for p in prompts]
        missing = [p for p, ids in zip(prompts, cached, strict=True) if ids is None]
        fresh = iter(self._encode(missing) if missing else [])
        return [ids if ids is not None else next(fresh) for ids in cached]

    def _settings(self, item: Item) -> dict[str, Any]:
        merged = {**self.generation, **item.params}
        return {
            "max_new_tokens": int(merged["max_new_tokens"]),
            "temperature": float(merged["temperature"]),
            "top_p": float(merged["top_p"]),
        }

    def run_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        settings = self._settings(items[0])
        max_new = settings["max_new_tokens"]
        sampler = None
        if settings["temperature"] > 0:
            # One generator per row: an item's tokens depend only on its own seed, never on its
            # batch neighbours.
            sampler = PerRowSampler([i.seed for i in items], settings["temperature"], settings["top_p"])
        prompts = [i.prompt for i in items]
        constraint = self.schema_constraint.rows(len(items), max_new) if self.schema_constraint else None
        if self.own_loop:
            new_tokens = self._decode(self._ids(prompts), max_new, sampler, constraint)
        else:
            new_tokens = self._generate(prompts, max_new, sampler, constraint)
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        counts = (new_tokens != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        return [{"output": t.strip(), "new_tokens": int(c)} for t, c in zip(texts, counts, strict=True)]

    def _generate(self, prompts: list[str], max_new: int, sampler: PerRowSampler | None,
                  constraint: RowStates | None = None) -> Any:
        """``model.generate`` on one left-padded batch (for models the own loop does not cover)."""
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max_new, "pad_token_id": self.tokenizer.pad_token_id,
                                  "do_sample": False}
        if self.fixed_output_length:
            kwargs["min_new_tokens"] = max_new
        # The schema's mask first, then the sampler draws among what is left; greedy takes the token drawn.
        processors = [p for p in (constraint, sampler) if p is not None]
        if processors:
            kwargs["logits_processor"] = processors
        with self.torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        return out[:, enc["input_ids"].shape[1] :].cpu()

    def _pick(self, logits: Any, sampler: PerRowSampler | None, rows: slice,
              constraint: RowStates | None = None) -> Any:
        """The next token of each row from its last-position logits (as ``generate`` scores them)."""
        scores = logits.float()
        if self.fixed_output_length:
            scores[:, self.eos_ids] = float("-inf")  # what min_new_tokens = max_new_tokens does
        if constraint is not None:
            scores = constraint.mask(scores, rows)
        token = scores.argmax(dim=-1) if sampler is None else sampler.sample(scores, rows).to(scores.device)
        if constraint is not None:
            constraint.advance(token, rows)
        return token

    def _prefill_kv(self, input_ids: Any, am: Any, position: Any) -> tuple[Any, list[tuple[Any, Any]]]:
        """One prefill call: each row's last-position logits and every layer's keys and values."""
        from transformers import DynamicCache

        cache: Any = DynamicCache(config=self.model.config)
        logits = self._prefill(input_ids, am, position, cache)
        return logits, [(layer.keys, layer.values) for layer in cache.layers]

    def _cache_config(self) -> Any:
        """The config ``InPlaceCache`` builds its transformers cache from (None: no transformers cache)."""
        return self.model.config

    def _prefill(self, input_ids: Any, am: Any, position: Any, cache: Any) -> Any:
        """One prefill call: fills ``cache`` and returns each row's last-position logits.

        Where ``last_layer_shortcut`` allows it (a plain Llama under SDPA), the last decoder layer
        runs in full only at each row's final position: for the other positions it only needs the
        keys and values the cache keeps (input norm, K/V projections, RoPE on K), not the query and
        output projections, the attention or the MLP. The final position then goes through the
        layer itself, whose attention appends its own K/V to the cache and attends over all keys.
        """
        if not self.last_layer_shortcut:
            res = self.model(input_ids=input_ids, attention_mask=am, position_ids=position,
                             **{self.own_loop: cache}, use_cache=True, logits_to_keep=1)
            return res.logits[:, -1]
        from transformers.masking_utils import create_causal_mask
        from transformers.models.llama.modeling_llama import rotate_half

        inner = self.model.model
        hidden = inner.embed_tokens(input_ids)
        # as LlamaModel.forward does for every layer but the last
        causal_mask = create_causal_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=am,
                                         position_ids=position, **{_cache_param(create_causal_mask): cache})
        cos, sin = inner.rotary_emb(hidden, position_ids=position)
        layer_cache = {_cache_param(type(inner.layers[-1]).forward): cache}
        for layer in inner.layers[:-1]:
            hidden = layer(hidden, attention_mask=causal_mask, position_embeddings=(cos, sin),
                           position_ids=position, use_cache=True, **layer_cache)
        last = inner.layers[-1]
        attn = last.self_attn
        if hidden.shape[1] > 1:  # K/V of the positions before the final one, as LlamaAttention computes them
            normed = last.input_layernorm(hidden[:, :-1])
            shape = (*normed.shape[:-1], -1, attn.head_dim)
            keys = attn.k_proj(normed).view(shape).transpose(1, 2)
            values = attn.v_proj(normed).view(shape).transpose(1, 2)
            c, s = cos[:, :-1].unsqueeze(1), sin[:, :-1].unsqueeze(1)
            cache.update((keys * c) + (rotate_half(keys) * s), values, attn.layer_idx)
        # the final query attends to every real key of its row (left padding: the mask is the row's)
        hidden = last(hidden[:, -1:], attention_mask=am[:, None, None, :].bool(),
                      position_embeddings=(cos[:, -1:], sin[:, -1:]), position_ids=position[:, -1:],
                      use_cache=True, **layer_cache)
        return self.model.lm_head(inner.norm(hidden))[:, -1]

    def _decode(self, ids: list[list[int]], max_new: int, sampler: PerRowSampler | None,
                constraint: RowStates | None = None) -> Any:
        """New tokens per row, shape (rows, steps), pad after a row's EOS (as ``generate`` returns).

        Prefill in length groups into one left-padded preallocated KV buffer (each group's rows
        land right-aligned at the batch's longest prompt, so the layout is that of one left-padded
        batch), then one step at a time over the rows still running.
        """
        torch = self.torch
        pad, dev = int(self.tokenizer.pad_token_id), self.device
        order = sorted(range(len(ids)), key=lambda r: len(ids[r]))
        rows = [ids[r] for r in order]
        if sampler is not None:
            sampler.keep(order)
        if constraint is not None:
            constraint.keep(order)
        lengths = [len(r) for r in rows]
        n, longest = len(rows), lengths[-1]
        out = torch.full((n, max_new), pad, dtype=torch.long)
        mask = torch.zeros((n, longest + max_new), dtype=torch.long)
        token = torch.empty((n,), dtype=torch.long, device=dev)
        keys: list[Any] = []
        values: list[Any] = []
        with torch.inference_mode():
            for start, stop in prefill_groups(lengths, self.call_cost):
                width = lengths[stop - 1]
                group = torch.full((stop - start, width), pad, dtype=torch.long)
                for i, row in enumerate(rows[start:stop]):
                    group[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                    mask[start + i, longest - len(row) : longest] = 1
                am = mask[start:stop, longest - width : longest].to(dev)
                position = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
                logits, kv = self._prefill_kv(group.to(dev), am, position)
                for li, (k, v) in enumerate(kv):
                    if len(keys) <= li:
                        keys.append(k.new_zeros((n, k.shape[1], longest + max_new, k.shape[3])))
                        values.append(v.new_zeros((n, v.shape[1], longest + max_new, v.shape[3])))
                    keys[li][start:stop, :, longest - width : longest] = k
                    values[li][start:stop, :, longest - width : longest] = v
                token[start:stop] = self._pick(logits, sampler, slice(start, stop), constraint)
                self.work["prefill_tokens"] += (stop - start) * width
                self.work["prefill_calls"] += 1
            mask = mask.to(dev)
            buffers = InPlaceCache(self._cache_config(), keys, values, longest)
            live = torch.arange(n)  # the sorted-row index of each row still in the batch
            finished = torch.zeros((n,), dtype=torch.bool, device=dev)
            position = torch.tensor(lengths, dtype=torch.long, device=dev)
            step = 0
            while True:
                token = token.masked_fill(finished, pad)  # finished rows emit pad, as in generate
                out[live, step] = token.cpu()
                self.work["row_steps"] += len(live)
                step += 1
                if step == max_new:
                    break
                if not self.fixed_output_length:
                    finished |= torch.isin(token, self.eos_ids)
                    done = int(finished.sum())
                    if done == len(live):
                        break
                    if done >= max(1, int(len(live) * self.COMPACT_FRACTION)):
                        kept = (~finished).nonzero().squeeze(1)
                        live, token, position, mask, finished = (live[kept.cpu()], token[kept], position[kept],
                                                                  mask[kept], finished[kept])
                        buffers.select(kept)
                        if sampler is not None:
                            sampler.keep(kept.tolist())
                        if constraint is not None:
                            constraint.keep(kept.tolist())
                mask[:, longest + step - 1] = 1
                # SDPA takes the (rows, 1, 1, keys) boolean mask as is; building it here skips the
                # model's per-step mask construction.
                step_mask = mask[:, None, None, : longest + step].bool() if self.mask_4d else mask[:, : longest + step]
                if self.direct_step is not None:
                    logits = self.direct_step(token, step_mask, position, buffers.layers)
                else:
                    logits = self.model(input_ids=token.unsqueeze(1), attention_mask=step_mask,
                                        position_ids=position.unsqueeze(1), **{self.own_loop: buffers.cache},
                                        use_cache=True).logits[:, -1]
                position = position + 1
                token = self._pick(logits, sampler, slice(0, len(live)), constraint)
        result = torch.empty_like(out[:, :step])
        result[torch.tensor(order)] = out[:, :step]
        return result


def prefill_groups(lengths: list[int], call_cost: int) -> list[tuple[int, int]]:
    """Cut sorted prompt lengths into contiguous ``(start, stop)`` groups of least prefill cost.

    A group costs ``call_cost + rows * longest`` prompt tokens (each row is padded to the group's
    longest). Exact dynamic programming over the cut points; only cuts between different lengths
    can pay (moving equal-length rows into the earlier group never costs more), so the work is
    quadratic in the number of distinct lengths, not rows.
    """
    bounds = [i for i in range(1, len(lengths)) if lengths[i] != lengths[i - 1]] + [len(lengths)]
    best = {0: 0}
    cut: dict[int, int] = {}
    for stop in bounds:
        width = lengths[stop - 1]
        best[stop], cut[stop] = min((cost + call_cost + (stop - start) * width, start) for start, cost in best.items())
    groups = []
    stop = len(lengths)
    while stop:
        groups.append((cut[stop], stop))
        stop = cut[stop]
    return groups[::-1]


# Generation settings genbatch's own loop reproduces; any other non-default setting in a model's
# generation_config (repetition penalty, bad words, forced tokens, ...) makes the runner use generate.
OWN_LOOP_SETTINGS = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "max_length",
                     "max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "use_cache",
                     "cache_implementation", "transformers_version", "_from_model_config"}


def supports_own_loop(model: Any) -> str:
    """The forward's cache argument name if ``TextRunner._decode`` can drive this model, else ``""``.

    It needs a decoder-only model whose default cache is plain full attention in every layer
    (no sliding window, no linear attention), a forward taking ``position_ids``, a cache and
    ``logits_to_keep``, and a generation_config without settings the loop does not apply.
    """
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if getattr(model.config, "is_encoder_decoder", False):
        return ""
    params = inspect.signature(model.forward).parameters
    name = _cache_name(params)
    if not name or not {"position_ids", "attention_mask", "logits_to_keep"} <= set(params):
        return ""
    try:
        layers = DynamicCache(config=model.config).layers
    except (TypeError, ValueError, AttributeError):
        return ""
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return ""
    extra = set(model.generation_config.to_diff_dict()) - OWN_LOOP_SETTINGS
    return "" if extra else name


def _cache_name(params: Any) -> str:
    """The parameter the KV cache goes in (``cache`` in transformers 5.2x, ``past_key_values`` before)."""
    return "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else ""


@functools.cache
def _cache_param(fn: Any) -> str:
    """:func:`_cache_name` of a function's signature (functions only: a cached bound method would pin its model)."""
    import inspect

    return _cache_name(inspect.signature(fn).parameters)


def last_layer_shortcut_fits(model: Any) -> bool:
    """Whether ``TextRunner._prefill`` may skip the last layer's non-final positions for ``model``.

    Only for the structure it mirrors: transformers' own ``LlamaForCausalLM`` / ``LlamaModel`` /
    ``LlamaDecoderLayer`` / ``LlamaAttention`` classes (not subclasses) under SDPA attention, with
    plain ``nn.Linear`` projections and plain weights (a dynamically quantised Linear may scale its
    activations over the whole input, so fewer rows would change the other rows' results).
    """
    import inspect

    try:
        from transformers.masking_utils import create_causal_mask
        from transformers.models.llama import modeling_llama as llama
    except ImportError:
        return False
    # the keyword names _prefill passes (the installed transformers' API), and nothing else required
    for fn, names in ((create_causal_mask, {"config", "inputs_embeds", "attention_mask", "position_ids"}),
                      (llama.LlamaDecoderLayer.forward, {"self", "hidden_states", "attention_mask", "position_embeddings"}),
                      (llama.LlamaAttention.forward, {"self", "hidden_states", "position_embeddings", "attention_mask"})):
        params = inspect.signature(fn).parameters
        required = {n for n, p in params.items() if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not _cache_param(fn) or not names <= set(params) or not required <= names | {_cache_param(fn)}:
            return False
    inner = getattr(model, "model", None)
    layers = list(getattr(inner, "layers", []))
    if not (type(model) is llama.LlamaForCausalLM and type(inner) is llama.LlamaModel
            and getattr(model.config, "_attn_implementation", "") == "sdpa"
            and len(layers) == model.config.num_hidden_layers > 0
            and all(type(layer) is llama.LlamaDecoderLayer and type(layer.self_attn) is llama.LlamaAttention
                    for layer in layers)):
        return False
    last = layers[-1]
    linears = [getattr(last.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    linears += [getattr(last.mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")] + [model.lm_head]
    return all(_plain_linear(m) for m in linears)


def _plain_linear(module: Any) -> bool:
    """A plain ``nn.Linear`` over plain weights (not a quantised module or tensor subclass), which
    ``F.linear`` on its weight computes exactly as its forward does."""
    import torch

    return type(module) is torch.nn.Linear and type(module.weight.data) is torch.Tensor


def direct_step_fits(model: Any) -> bool:
    """Whether ``LlamaCompute.from_transformers`` may run ``model``'s decode steps: ``last_layer_shortcut_fits``'s
    structure (checked before) with plain ``nn.Linear`` projections in every layer and no module hooks."""
    import torch

    inner = model.model
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if not all(_plain_linear(m) for m in linears):
            return False
    # the step calls forward methods directly: a hook (e.g. accelerate's offloading) would be skipped
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    embed = inner.embed_tokens
    return type(embed) is torch.nn.Embedding and embed.max_norm is None and not hooked


class InPlaceCache:
    """Preallocated K/V buffers, appended to in place; with a config, also a transformers ``DynamicCache``
    over them (``cache``) for the model's own forward.

    Each layer's ``update`` writes the step's keys/values into the next column and returns views
    up to it, so no step copies the cache; ``select`` keeps only some rows (finished rows leave).
    """

    def __init__(self, config: Any, keys: list[Any], values: list[Any], filled: int) -> None:
        layer = KVBuffer if config is None else _buffer_layer_class()
        self.layers = [layer(k, v, filled) for k, v in zip(keys, values, strict=True)]
        self.cache: Any = None
        if config is not None:
            from transformers import DynamicCache

            self.cache = DynamicCache(config=config)
            self.cache.layers = self.layers

    def select(self, rows: Any) -> None:
        for layer in self.layers:
            layer.select(rows)


class KVBuffer:
    """One layer's K/V buffer: ``update`` writes the next columns in place and returns views up to them."""

    def __init__(self, keys: Any, values: Any, filled: int) -> None:
        self.key_buffer, self.value_buffer, self.filled = keys, values, filled
        self.keys, self.values = keys[:, :, :filled], values[:, :, :filled]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        start, self.filled = self.filled, self.filled + key_states.shape[-2]
        self.key_buffer[:, :, start : self.filled] = key_states
        self.value_buffer[:, :, start : self.filled] = value_states
        self.keys = self.key_buffer[:, :, : self.filled]
        self.values = self.value_buffer[:, :, : self.filled]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return int(self.filled)

    def select(self, rows: Any) -> None:
        self.key_buffer = self.key_buffer.index_select(0, rows)
        self.value_buffer = self.value_buffer.index_select(0, rows)
        self.keys = self.key_buffer[:, :, : self.filled]
        self.values = self.value_buffer[:, :, : self.filled]


_BUFFER_LAYER: list[type] = []


def _buffer_layer_class() -> type:
    """``KVBuffer`` as a transformers ``DynamicLayer`` (what a ``DynamicCache``'s layers must be)."""
    if _BUFFER_LAYER:
        return _BUFFER_LAYER[0]
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(KVBuffer, DynamicLayer):
        def __init__(self, keys: Any, values: Any, filled: int) -> None:
            DynamicLayer.__init__(self)
            KVBuffer.__init__(self, keys, values, filled)
            self.is_initialized = True

    _BUFFER_LAYER.append(BufferLayer)
    return BufferLayer


class PerRowSampler:
    """Samples each row with its own ``torch.Generator`` (temperature, then top-p).

    transformers draws one ``torch.multinomial`` over the whole batch, so a row's sample would
    depend on its neighbours. ``sample`` draws per row; as a ``generate`` logits processor
    (``__call__``) it returns scores that make the drawn token the only candidate.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import torch

        self.torch = torch
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def keep(self, rows: list[int]) -> None:
        """Reorder/subset the rows (the decoding loop sorts rows and drops finished ones)."""
        self.generators = [self.generators[r] for r in rows]

    def sample(self, scores: Any, rows: slice | None = None) -> Any:
        """One token per row of ``scores``, drawn with the generators of ``rows`` (default: all)."""
        torch = self.torch
        generators = self.generators[rows] if rows is not None else self.generators
        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return torch.cat([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)])

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        chosen = self.sample(scores).unsqueeze(1)
        forced = self.torch.full_like(scores, float("-inf"))
        forced.scatter_(-1, chosen.to(scores.device), 0.0)
        return forced


class ImageRunner:
    """A diffusers text-to-image pipeline; one torch.Generator per item keeps outputs batch-independent."""

    def __init__(self, model_dir: Path, *, generation: dict[str, Any], precision: str, device: str) -> None:
        import torch
        from diffusers import DiffusionPipeline

        self.torch = torch
        self.device = device
        self.generation = generation
        self.pipe = DiffusionPipeline.from_pretrained(
            model_dir,
            local_files_only=True,
            use_safetensors=True,
            dtype=pick_dtype(precision, device),
        ).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def token_length(self, prompt: str) -> int:
        return len(prompt)

    def run_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        import numpy as np
        from PIL import Image

        settings = {**self.generation, **items[0].params}
        generators = [self.torch.Generator(device="cpu").manual_seed(i.seed) for i in items]
        negative = [i.negative_prompt or "" for i in items]
        with self.torch.inference_mode():
            result = self.pipe(
                prompt=[i.prompt for i in items],
                negative_prompt=negative if any(negative) else None,
                num_inference_steps=int(settings["num_inference_steps"]),
                guidance_scale=float(settings["guidance_scale"]),
                height=int(settings["height"]),
                width=int(settings["width"]),
                generator=generators,
                output_type="np",
            )
        images = result.images
        bad = [items[i].id for i in range(len(items)) if not np.isfinite(images[i]).all()]
        if bad:
            # The worker then retries item by item, so only the NaN items end in errors/.
            raise ValueError(f"non-finite pixels (NaN/inf) in the image of {bad[:3]}")
        return [{"image": Image.fromarray((np.clip(img, 0, 1) * 255).round().astype("uint8"))} for img in images]


NATIVE_LLAMA_ENV = "GENBATCH_NATIVE_LLAMA"
"""Set to ``0`` to run every text model through transformers (the native path's escape hatch)."""


def load_runner(task: str, model_dir: Path, *, generation: dict[str, Any], precision: str, device: str) -> Any:
    """The runner for ``task``: a plain Llama without transformers where it runs exactly as transformers would
    (``models.native_runner``), else transformers' (text) or diffusers' (image) pipeline."""
    log.info("loading %s runner from %s on %s (%s)", task, model_dir, device, precision)
    if task == "text" and os.environ.get(NATIVE_LLAMA_ENV, "1") != "0":
        from models.native_runner import load_native_text_runner

        native = load_native_text_runner(model_dir, generation=generation, precision=precision, device=device)
        if native is not None:
            return native
    cls = TextRunner if task == "text" else ImageRunner
    return cls(model_dir, generation=generation, precision=precision, device=device)
