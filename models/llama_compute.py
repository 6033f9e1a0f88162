"""A plain Llama's prefill and decode step as torch tensor operations, over transformers' modules or bare weights.

``LlamaCompute.from_transformers`` runs a loaded ``LlamaForCausalLM``'s decode steps without its per-call
Python (the direct step). ``load_llama_compute`` builds the same computation from the safetensors and
``config.json`` alone, so the worker serves a plain Llama without importing transformers (about 2.5 s of
a CPU worker's start). Both run the operations transformers runs, in its order, on the same weights:
``tests/integration/test_llama_compute.py`` holds the logits to transformers' bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Linear:
    """A projection's weight and bias (``F.linear`` computes exactly what ``nn.Linear.forward`` does)."""

    weight: Any
    bias: Any = None


@dataclass(frozen=True)
class LlamaLayer:
    """One decoder layer: its projections, its two norms, the MLP's activation, and the attention module
    transformers' attention functions read their settings from (``num_key_value_groups``, ``is_causal``)."""

    q: Linear
    k: Linear
    v: Linear
    o: Linear
    gate: Linear
    up: Linear
    down: Linear
    input_norm: Callable[[Any], Any]
    post_norm: Callable[[Any], Any]
    act: Callable[[Any], Any]
    attn_module: Any
    head_dim: int
    scaling: float


class LlamaCompute:
    """A Llama's forward as its tensor operations: ``__call__`` is one decode step, ``prefill`` one prefill call."""

    def __init__(self, *, embed: Any, padding_idx: int | None, layers: list[LlamaLayer], norm: Callable[[Any], Any],
                 lm_head: Linear, rotary: Callable[..., tuple[Any, Any]], rope: Callable[..., tuple[Any, Any]],
                 attention: Callable[..., tuple[Any, Any]]) -> None:
        import torch

        self.torch, self.F = torch, torch.nn.functional
        self.embed, self.padding_idx, self.layers, self.norm, self.lm_head = embed, padding_idx, layers, norm, lm_head
        self.rotary, self.rope, self.attention = rotary, rope, attention

    @classmethod
    def from_transformers(cls, model: Any) -> LlamaCompute:
        """The computation of a loaded transformers ``LlamaForCausalLM`` (``direct_step_fits`` checked)."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama import modeling_llama as llama

        inner = model.model

        def linear(m: Any) -> Linear:
            return Linear(m.weight, m.bias)

        layers = [LlamaLayer(q=linear(la.self_attn.q_proj), k=linear(la.self_attn.k_proj), v=linear(la.self_attn.v_proj),
                             o=linear(la.self_attn.o_proj), gate=linear(la.mlp.gate_proj), up=linear(la.mlp.up_proj),
                             down=linear(la.mlp.down_proj), input_norm=la.input_layernorm.forward,
                             post_norm=la.post_attention_layernorm.forward, act=la.mlp.act_fn.forward,
                             attn_module=la.self_attn, head_dim=la.self_attn.head_dim, scaling=la.self_attn.scaling)
                  for la in inner.layers]
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, llama.eager_attention_forward)
        return cls(embed=inner.embed_tokens.weight, padding_idx=inner.embed_tokens.padding_idx, layers=layers,
                   norm=inner.norm.forward, lm_head=linear(model.lm_head), rotary=inner.rotary_emb,
                   rope=llama.apply_rotary_pos_emb, attention=attention)

    def layer(self, hidden: Any, layer: LlamaLayer, cos: Any, sin: Any, mask: Any, cache: Any) -> Any:
        """One decoder layer as ``LlamaDecoderLayer.forward`` runs it; ``cache.update`` takes this call's
        K/V and returns every key and value the queries attend to."""
        F = self.F
        rows, length = hidden.shape[:2]
        shape = (rows, length, -1, layer.head_dim)
        normed = layer.input_norm(hidden)
        query = F.linear(normed, layer.q.weight, layer.q.bias).view(shape).transpose(1, 2)
        key = F.linear(normed, layer.k.weight, layer.k.bias).view(shape).transpose(1, 2)
        value = F.linear(normed, layer.v.weight, layer.v.bias).view(shape).transpose(1, 2)
        query, key = self.rope(query, key, cos, sin)
        key, value = cache.update(key, value)
        out, _ = self.attention(layer.attn_module, query, key, value, mask, dropout=0.0, scaling=layer.scaling)
        out = out.reshape(rows, length, -1).contiguous()
        hidden = hidden + F.linear(out, layer.o.weight, layer.o.bias)
        normed = layer.post_norm(hidden)
        gated = layer.act(F.linear(normed, layer.gate.weight, layer.gate.bias))
        return hidden + F.linear(gated * F.linear(normed, layer.up.weight, layer.up.bias),
                                 layer.down.weight, layer.down.bias)

    def logits(self, hidden: Any) -> Any:
        """Each row's last-position logits."""
        return self.F.linear(self.norm(hidden), self.lm_head.weight, self.lm_head.bias)[:, -1]

    def __call__(self, token: Any, mask: Any, position: Any, caches: list[Any]) -> Any:
        """One decode step: last-position logits of each row for ``token`` (rows,) at ``position`` (rows,),
        attending under ``mask`` and appending each layer's K/V to ``caches`` (``InPlaceCache.layers``)."""
        hidden = self.F.embedding(token.unsqueeze(1), self.embed, self.padding_idx)
        if mask.dtype == self.torch.bool:  # SDPA turns a boolean mask into this additive one in every layer
            mask = self.torch.zeros(mask.shape, dtype=hidden.dtype, device=hidden.device).masked_fill_(
                ~mask, float("-inf"))
        cos, sin = self.rotary(hidden, position_ids=position.unsqueeze(1))
        for layer, cache in zip(self.layers, caches, strict=True):
            hidden = self.layer(hidden, layer, cos, sin, mask, cache)
        return self.logits(hidden)

    def prefill(self, input_ids: Any, am: Any, position: Any) -> tuple[Any, list[tuple[Any, Any]]]:
        """One left-padded prefill call: each row's last-position logits and every layer's K/V.

        As ``TextRunner._prefill`` runs it over transformers (``create_causal_mask``'s SDPA mask: none when
        no row is padded, else causal and padding; the last layer in full only at the final position).
        """
        torch = self.torch
        hidden = self.F.embedding(input_ids, self.embed, self.padding_idx)
        length = hidden.shape[1]
        mask = None
        if not bool(am.all()):
            causal = torch.arange(length, device=am.device)[None, :] <= torch.arange(length, device=am.device)[:, None]
            mask = causal[None, None] & am.bool()[:, None, None, :]
        cos, sin = self.rotary(hidden, position_ids=position)
        kv = [_Collect() for _ in self.layers]
        for layer, collect in zip(self.layers[:-1], kv, strict=False):
            hidden = self.layer(hidden, layer, cos, sin, mask, collect)
        last, collect = self.layers[-1], kv[-1]
        if length > 1:  # K/V of the positions before the final one, as LlamaAttention computes them
            normed = last.input_norm(hidden[:, :-1])
            shape = (*normed.shape[:-1], -1, last.head_dim)
            keys = self.F.linear(normed, last.k.weight, last.k.bias).view(shape).transpose(1, 2)
            values = self.F.linear(normed, last.v.weight, last.v.bias).view(shape).transpose(1, 2)
            _, rotated = self.rope(keys, keys, cos[:, :-1], sin[:, :-1])  # RoPE on K (the query side is unused)
            collect.update(rotated, values)
        hidden = self.layer(hidden[:, -1:], last, cos[:, -1:], sin[:, -1:], am[:, None, None, :].bool(), collect)
        return self.logits(hidden), [(c.keys, c.values) for c in kv]


class _Collect:
    """A prefill's per-layer K/V: appended as ``DynamicLayer.update`` appends them (``torch.cat``)."""

    keys: Any = None
    values: Any = None

    def update(self, key: Any, value: Any) -> tuple[Any, Any]:
        import torch

        if self.keys is None:
            self.keys, self.values = key, value
        else:
            self.keys, self.values = torch.cat([self.keys, key], dim=-2), torch.cat([self.values, value], dim=-2)
        return self.keys, self.values


# -- the same computation from bare weights (no transformers) -------------------------------------------------

def rms_norm(weight: Any, eps: float) -> Callable[[Any], Any]:
    """``LlamaRMSNorm.forward``."""
    import torch

    def norm(hidden: Any) -> Any:
        dtype = hidden.dtype
        hidden = hidden.to(torch.float32)
        variance = hidden.pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + eps)
        return weight * hidden.to(dtype)

    return norm


def default_rotary(theta: float, head_dim: int) -> Callable[..., tuple[Any, Any]]:
    """``LlamaRotaryEmbedding.forward`` for the default RoPE type (attention scaling 1.0)."""
    import torch

    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))

    def rotary(x: Any, position_ids: Any) -> tuple[Any, Any]:
        freqs = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * 1.0, emb.sin() * 1.0
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

    return rotary


def apply_rope(q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """``apply_rotary_pos_emb`` (heads in dimension 1)."""
    import torch

    def rotate_half(x: Any) -> Any:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def sdpa(module: Any, query: Any, key: Any, value: Any, mask: Any, dropout: float = 0.0,
         scaling: float | None = None) -> tuple[Any, None]:
    """transformers' ``sdpa_attention_forward`` for one K/V head per query head (no GQA, no position bias)."""
    import torch

    causal = query.shape[2] > 1 and mask is None
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout,
                                                           scale=scaling, is_causal=causal)
    return out.transpose(1, 2).contiguous(), None


def native_unfit_reason(model_dir: Path) -> str:
    """Why ``load_llama_compute`` cannot run this model exactly as transformers would ("" when it can).

    Only the structure it mirrors: ``LlamaForCausalLM`` with SiLU, default RoPE, one K/V head per query head,
    no quantisation, and safetensors weights.
    """
    config = read_json(model_dir / "config.json")
    if not config:
        return "no config.json"
    heads = config.get("num_attention_heads")
    required = ("hidden_size", "num_attention_heads", "num_hidden_layers", "rms_norm_eps", "tie_word_embeddings")
    checks = {
        "config.json leaves a setting to transformers' defaults": any(key not in config for key in required),
        "not a LlamaForCausalLM": config.get("architectures") != ["LlamaForCausalLM"] or config.get("model_type") != "llama",
        "activation is not SiLU": config.get("hidden_act") != "silu",
        "grouped K/V heads": config.get("num_key_value_heads", heads) != heads,
        "RoPE scaling": _rope(config)[1] != "default",
        "quantised weights": "quantization_config" in config,
        "tensor-parallel slicing": config.get("pretraining_tp", 1) != 1,
        "attention other than SDPA": config.get("_attn_implementation", config.get("attn_implementation")) not in (None, "sdpa"),
        "no safetensors weights": not ((model_dir / WEIGHTS_FILE).is_file() or (model_dir / WEIGHTS_INDEX).is_file()),
    }
    return next((reason for reason, failed in checks.items() if failed), "")


def load_llama_compute(model_dir: Path, dtype: Any, device: str) -> LlamaCompute:
    """The model's computation from its ``config.json`` and safetensors (``native_unfit_reason`` checked):
    every tensor the checkpoint holds is used, and every one used must be there."""
    from types import SimpleNamespace

    from safetensors.torch import load_file

    config = read_json(model_dir / "config.json")
    files = ([WEIGHTS_FILE] if (model_dir / WEIGHTS_FILE).is_file()
             else sorted(set(read_json(model_dir / WEIGHTS_INDEX).get("weight_map", {}).values())))
    tensors: dict[str, Any] = {}
    for name in files:
        tensors.update(load_file(str(model_dir / name), device="cpu"))
    used: set[str] = set()

    def take(name: str, required: bool = True) -> Any:
        if name not in tensors:
            if required:
                raise ValueError(f"{model_dir}: the checkpoint has no tensor {name}")
            return None
        used.add(name)
        return tensors[name].to(device=device, dtype=dtype)

    heads, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    eps = float(config["rms_norm_eps"])
    attn_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    module = SimpleNamespace(num_key_value_groups=1, is_causal=True)

    def linear(name: str, bias: bool) -> Linear:
        return Linear(take(f"{name}.weight"), take(f"{name}.bias") if bias else None)

    layers = []
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}"
        layers.append(LlamaLayer(
            q=linear(f"{p}.self_attn.q_proj", attn_bias), k=linear(f"{p}.self_attn.k_proj", attn_bias),
            v=linear(f"{p}.self_attn.v_proj", attn_bias), o=linear(f"{p}.self_attn.o_proj", attn_bias),
            gate=linear(f"{p}.mlp.gate_proj", mlp_bias), up=linear(f"{p}.mlp.up_proj", mlp_bias),
            down=linear(f"{p}.mlp.down_proj", mlp_bias),
            input_norm=rms_norm(take(f"{p}.input_layernorm.weight"), eps),
            post_norm=rms_norm(take(f"{p}.post_attention_layernorm.weight"), eps),
            act=_silu(), attn_module=module, head_dim=head_dim, scaling=head_dim**-0.5))
    embed = take("model.embed_tokens.weight")
    tied = bool(config["tie_word_embeddings"])
    head = embed if tied else take("lm_head.weight")
    if tied:
        used.add("lm_head.weight")  # transformers ties it to the embedding, whatever the file holds
    norm = rms_norm(take("model.norm.weight"), eps)
    unused = sorted(set(tensors) - used)
    if unused:
        raise ValueError(f"{model_dir}: tensors a plain Llama does not use: {', '.join(unused[:5])}")
    pad = config.get("pad_token_id")
    return LlamaCompute(embed=embed, padding_idx=pad if isinstance(pad, int) else None, layers=layers, norm=norm,
                        lm_head=Linear(head), rotary=default_rotary(_rope(config)[0], head_dim), rope=apply_rope,
                        attention=sdpa)


def _silu() -> Callable[[Any], Any]:
    import torch

    return torch.nn.functional.silu


def _rope(config: dict[str, Any]) -> tuple[float, str]:
    """RoPE theta and type, from ``rope_parameters`` (transformers 5) or the older ``rope_theta``/``rope_scaling``."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    return float(theta), str(kind)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a model folder ({} when there is none)."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return data
