"""Pruning, made permanent and saved as safetensors.

- ``structured=True`` (the useful one): drop the lowest-scoring MLP intermediate channels of every
  decoder layer and shrink ``intermediate_size`` — gate/up rows and down columns are sliced
  consistently, so the saved model is genuinely smaller and its dense matmuls do less work.
  A channel's score is ``|gate_j| * |up_j| * |down_:,j|`` (L2 norms): the SwiGLU output of channel j
  scales with all three. Every layer keeps the same number of channels (the config holds one size).
- ``structured=False``: unstructured L1-magnitude pruning (``torch.nn.utils.prune``) of each decoder
  Linear weight, then ``prune.remove`` to bake the zeros in. The tensors stay dense: the file is the
  same size and dense kernels run at the same speed — it only shows how much quality a sparsity costs.

The tied embedding / ``lm_head`` is never pruned (pruning the head would silently untie it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from genbatch.errors import SpecError
from models.optimize.common import (
    DEFAULT_EVAL_ROWS,
    check_model_dir,
    copy_model_files,
    count_params,
    load_causal_lm,
    mention_rate,
    parent_info,
    prepare_out_dir,
    quality_block,
    size_block,
    software,
    weights_bytes,
    write_card,
)

log = logging.getLogger(__name__)


def decoder_linears(model: Any) -> list[tuple[str, Any]]:
    """(name, module) of every nn.Linear inside the decoder layers (not the lm_head)."""
    import torch

    return [(n, m) for n, m in model.model.layers.named_modules() if isinstance(m, torch.nn.Linear)]


def measured_sparsity(model: Any) -> float:
    """Share of exactly-zero weights over the decoder Linear layers."""
    zeros = total = 0
    for _, module in decoder_linears(model):
        zeros += int((module.weight == 0).sum())
        total += module.weight.numel()
    return zeros / total


def channel_scores(mlp: Any) -> Any:
    """Importance of each intermediate channel of a SwiGLU MLP."""
    return mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)


def _sliced(linear: Any, keep: Any, dim: int) -> Any:
    import torch

    weight = linear.weight.detach().index_select(dim, keep).clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                          dtype=weight.dtype, device=weight.device)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return new


def prune_mlp_channels(model: Any, sparsity: float) -> dict[str, Any]:
    """Drop ``sparsity`` of every layer's MLP intermediate channels in place; returns what was kept."""
    import torch

    size = int(model.config.intermediate_size)
    keep_n = max(1, round(size * (1.0 - sparsity)))
    kept = []
    with torch.no_grad():
        for layer in model.model.layers:
            mlp = layer.mlp
            keep = channel_scores(mlp).topk(keep_n).indices.sort().values
            mlp.gate_proj = _sliced(mlp.gate_proj, keep, 0)
            mlp.up_proj = _sliced(mlp.up_proj, keep, 0)
            mlp.down_proj = _sliced(mlp.down_proj, keep, 1)
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = keep_n
            kept.append(keep_n)
    model.config.intermediate_size = keep_n
    return {"intermediate_size": [size, keep_n], "channels_removed_fraction": round(1 - keep_n / size, 4)}


def prune_unstructured(model: Any, sparsity: float) -> dict[str, Any]:
    """L1-magnitude pruning of each decoder Linear weight, made permanent with ``prune.remove``."""
    from torch.nn.utils import prune as torch_prune

    for _, module in decoder_linears(model):
        torch_prune.l1_unstructured(module, name="weight", amount=sparsity)
        torch_prune.remove(module, "weight")
    return {"sparsity_measured": round(measured_sparsity(model), 4)}


def prune(model_dir: Path, out_dir: Path, sparsity: float, structured: bool = True, *,
          eval_rows: int = DEFAULT_EVAL_ROWS) -> dict[str, Any]:
    """Prune ``model_dir`` to ``sparsity`` (0 < s < 1) and save the permanent result in ``out_dir``.

    Steps: 1. check inputs and the parent; 2. prune in memory (structured: shrink MLP channels;
    unstructured: zero the smallest weights); 3. save with ``save_pretrained`` (safetensors) beside
    the parent's tokenizer; 4. reload the saved variant and measure size and quality against the parent.
    Returns the variant's card (also written as ``optimization.json``).
    """
    from transformers import AutoModelForCausalLM

    # 1. inputs
    if not 0.0 < sparsity < 1.0:
        raise SpecError(f"sparsity {sparsity!r} must lie strictly between 0 and 1 (e.g. 0.5)")
    model_dir = check_model_dir(Path(model_dir))
    model, tokenizer = load_causal_lm(model_dir)
    if structured and not all(hasattr(layer.mlp, "gate_proj") for layer in model.model.layers):
        raise SpecError(f"structured pruning needs a Llama-style gated MLP; {model_dir} is {type(model).__name__}")
    out_dir = prepare_out_dir(Path(out_dir))
    parent_quality = mention_rate(model, tokenizer, eval_rows)
    parent_params = count_params(model)
    # 2. prune
    details = prune_mlp_channels(model, sparsity) if structured else prune_unstructured(model, sparsity)
    # 3. save: the parent's tokenizer files, then config/generation config/weights from save_pretrained
    copy_model_files(model_dir, out_dir, skip_weights=True)
    model.save_pretrained(out_dir)
    # 4. reload from disk and measure
    variant = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True, use_safetensors=True).eval()
    if not structured:
        details["sparsity_measured_after_reload"] = round(measured_sparsity(variant), 4)
    details["params"] = [parent_params, count_params(variant)]
    details["params_removed_fraction"] = round(1 - details["params"][1] / parent_params, 4)
    card: dict[str, Any] = {
        "lineage": {
            "parent": parent_info(model_dir),
            "method": "prune_structured" if structured else "prune_unstructured",
            "params": {"sparsity": sparsity, "structured": structured,
                       "criterion": "gate*up*down channel L2 norm" if structured else "L1 magnitude per layer",
                       "scope": "MLP intermediate channels" if structured else "decoder Linear weights"},
            "software": software(),
        },
        "prune": details,
        "size": size_block(weights_bytes(model_dir), weights_bytes(out_dir), "safetensors file bytes"
                           + ("" if structured else " (unstructured zeros are stored densely: same size)")),
        "quality": quality_block(parent_quality, mention_rate(variant, tokenizer, eval_rows), eval_rows),
        "files": sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()),
    }
    write_card(out_dir, card)
    return card
