"""Optimised variants of a registered model: int8 quantisation, pruning, distillation.

Each recipe reads a ``save_pretrained`` folder (safetensors only), writes a new variant folder
(safetensors + JSON only, never pickle) and returns the variant's card — lineage, size against the
parent, quality (mention rate) against the parent — also saved as ``optimization.json``:

- :func:`quantize_int8` — the parent's weights plus ``recipe.json``; the loader calls
  :func:`apply_recipe` (dynamic int8 on CPU, weight-only int8 on CUDA).
- :func:`prune` — structured (shrinks the MLP ``intermediate_size``) or unstructured magnitude pruning.
- :func:`distill` — a smaller Llama student trained on the teacher's logits on the catalog corpus.

``python -m models.optimize {int8,prune,distill} PARENT OUT ...`` runs one from the shell.
"""

from models.optimize.common import OPTIMIZATION_CARD, assert_no_pickle, load_causal_lm, mention_rate
from models.optimize.distill import distill
from models.optimize.prune import measured_sparsity, prune
from models.optimize.quantize import (
    RECIPE,
    apply_recipe,
    count_linear,
    count_quantized_linear,
    make_recipe,
    quantize_int8,
    read_recipe,
)

__all__ = [
    "OPTIMIZATION_CARD",
    "RECIPE",
    "apply_recipe",
    "assert_no_pickle",
    "count_linear",
    "count_quantized_linear",
    "distill",
    "load_causal_lm",
    "make_recipe",
    "measured_sparsity",
    "mention_rate",
    "prune",
    "quantize_int8",
    "read_recipe",
]
