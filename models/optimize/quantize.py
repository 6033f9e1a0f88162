"""Int8 quantisation stored as a load-time recipe (the weights stay the parent's safetensors).

A quantised torch model cannot be saved without pickle (packed int8 params, tensor subclasses), so a
variant folder holds the parent's config, tokenizer and ``model.safetensors`` plus ``recipe.json``::

    {"quantize": {"method": "torch.ao.quantize_dynamic", "dtype": "int8", "modules": "Linear",
                  "device_path": {"cpu": "dynamic_int8", "cuda": "weight_only_int8"}}}

and the loader calls :func:`apply_recipe` after ``from_pretrained``. Paths:

- CPU, ``dynamic_int8``: int8 weights (per-tensor) and activations quantised on the fly per batch.
  Backend ``torch.ao`` (``torch.ao.quantization.quantize_dynamic``, fbgemm/onednn int8 GEMM kernels)
  or ``torchao`` (``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``; per-row weights). On
  torch 2.13 CPU in eager mode torchao's path is 2-4x *slower* than fp32 for this model's shapes
  (its int8 matmul is meant for ``torch.compile``), while torch.ao's kernels are faster — so ``auto``
  picks torch.ao where it exists and torchao otherwise (torch.ao.quantization is deprecated upstream).
- CUDA, ``weight_only_int8``: torchao ``Int8WeightOnlyConfig`` — dynamic activation quantisation
  costs more than it saves in memory-bound GPU decode, weight-only halves the bytes read per token.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from genbatch.errors import ModelIntegrityError, SpecError
from models.optimize.common import (
    DEFAULT_EVAL_ROWS,
    check_model_dir,
    copy_model_files,
    load_causal_lm,
    mention_rate,
    parent_info,
    prepare_out_dir,
    quality_block,
    size_block,
    software,
    state_dict_bytes,
    write_card,
)

log = logging.getLogger(__name__)

RECIPE = "recipe.json"
TORCH_AO = "torch.ao.quantize_dynamic"
TORCHAO_DYNAMIC = "torchao.Int8DynamicActivationInt8WeightConfig"
TORCHAO_WEIGHT_ONLY = "torchao.Int8WeightOnlyConfig"
CPU_METHODS = {"torch.ao": TORCH_AO, "torchao": TORCHAO_DYNAMIC}


def torch_ao_available() -> bool:
    try:
        from torch.ao.quantization import quantize_dynamic  # noqa: F401
    except ImportError:
        return False
    return True


def torchao_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchao")
    except PackageNotFoundError:
        return None


def make_recipe(backend: str = "auto") -> dict[str, Any]:
    """The recipe.json content for a CPU backend (``auto``, ``torch.ao`` or ``torchao``)."""
    if backend == "auto":
        backend = "torch.ao" if torch_ao_available() else "torchao"
    if backend not in CPU_METHODS:
        raise SpecError(f"unknown int8 backend {backend!r}; use one of {sorted(CPU_METHODS)} or 'auto'")
    return {
        "quantize": {
            "method": CPU_METHODS[backend],
            "dtype": "int8",
            "modules": "Linear",
            "device_path": {"cpu": "dynamic_int8", "cuda": "weight_only_int8"},
            "cuda_method": TORCHAO_WEIGHT_ONLY,
        }
    }


def read_recipe(model_dir: Path) -> dict[str, Any] | None:
    """The folder's ``recipe.json``, or None when the model loads as saved."""
    path = Path(model_dir) / RECIPE
    if not path.is_file():
        return None
    recipe: dict[str, Any] = json.loads(path.read_text())
    return recipe


def count_linear(model: Any) -> int:
    """nn.Linear modules (float or torchao-quantised) plus torch.ao dynamic quantised Linears."""
    import torch

    return sum(isinstance(m, torch.nn.Linear) or _is_ao_dynamic_linear(m) for m in model.modules())


def count_quantized_linear(model: Any) -> int:
    """Linear layers whose weights really are int8 now (not merely wrapped)."""
    import torch

    count = 0
    for module in model.modules():
        if _is_ao_dynamic_linear(module):
            count += int(module.weight().dtype == torch.qint8)
        elif isinstance(module, torch.nn.Linear):
            weight = module.weight
            qdata = getattr(weight, "qdata", None)  # torchao Int8Tensor keeps int8 data in .qdata
            count += int(qdata is not None and qdata.dtype == torch.int8)
    return count


def _is_ao_dynamic_linear(module: Any) -> bool:
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    except ImportError:
        return False
    return isinstance(module, DynamicLinear)


def apply_recipe(model: Any, recipe: dict[str, Any] | None, device: str) -> Any:
    """Apply a load-time recipe to a model already loaded (and moved to ``device``); returns the model.

    ``None`` or a recipe without ``quantize`` leaves the model as it is. Raises
    :class:`ModelIntegrityError` if no Linear layer ends up quantised.
    """
    spec = (recipe or {}).get("quantize")
    if not spec:
        return model
    if spec.get("dtype") != "int8" or spec.get("modules") != "Linear":
        raise SpecError(f"unsupported quantize recipe {spec!r}; only int8 on Linear modules is known")
    kind = device.split(":", 1)[0]
    path = spec.get("device_path", {}).get(kind)
    total = count_linear(model)
    started = time.perf_counter()
    if kind == "cuda" and path == "weight_only_int8":
        method = spec.get("cuda_method", TORCHAO_WEIGHT_ONLY)
        quantize_, configs = _torchao()
        quantize_(model, configs["Int8WeightOnlyConfig"]())
    elif kind == "cpu" and path == "dynamic_int8":
        method = spec["method"]
        if next(model.parameters()).dtype != _float32():
            log.warning("int8 dynamic quantisation needs float32 on CPU; converting the model from %s",
                        next(model.parameters()).dtype)
            model = model.float()
        model = _cpu_dynamic_int8(model, method)
    else:
        raise SpecError(f"quantize recipe has no path for device {device!r}: device_path={spec.get('device_path')}")
    quantized = count_quantized_linear(model)
    if quantized == 0:
        raise ModelIntegrityError(f"recipe {method} on {device} quantised no Linear layer; is the model float?")
    log.info("applied int8 recipe (%s, %s) on %s: %d of %d Linear layers in %.2fs", method, path,
             device, quantized, total, time.perf_counter() - started)
    return model


def _float32() -> Any:
    import torch

    return torch.float32


def _torchao() -> tuple[Any, dict[str, Any]]:
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError as e:
        raise SpecError(f"this int8 recipe needs torchao ({e}); install torchao in the worker image") from e
    configs = {
        "Int8DynamicActivationInt8WeightConfig": Int8DynamicActivationInt8WeightConfig,
        "Int8WeightOnlyConfig": Int8WeightOnlyConfig,
    }
    return quantize_, configs


def _cpu_dynamic_int8(model: Any, method: str) -> Any:
    import torch

    if method == TORCH_AO:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao.quantization warns that it is deprecated upstream
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    if method == TORCHAO_DYNAMIC:
        quantize_, configs = _torchao()
        quantize_(model, configs["Int8DynamicActivationInt8WeightConfig"]())
        return model
    raise SpecError(f"unknown CPU int8 method {method!r}; known: {sorted(CPU_METHODS.values())}")


def quantize_int8(model_dir: Path, out_dir: Path, *, backend: str = "auto",
                  eval_rows: int = DEFAULT_EVAL_ROWS) -> dict[str, Any]:
    """Build an int8 variant of ``model_dir`` in ``out_dir``: the parent's files plus ``recipe.json``.

    Steps: 1. check the parent (safetensors, no pickle); 2. copy its files and write the recipe;
    3. quantise in memory exactly as the loader will (:func:`apply_recipe` on CPU) and count the
    quantised Linear layers; 4. measure size (serialised state_dict in memory, parent measured the
    same way) and quality against the parent. Returns the variant's card (also ``optimization.json``).
    """
    model_dir = check_model_dir(Path(model_dir))
    out_dir = prepare_out_dir(Path(out_dir))
    # 2. the variant folder: parent weights + recipe
    recipe = make_recipe(backend)
    files = copy_model_files(model_dir, out_dir)
    (out_dir / RECIPE).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    # 3. quantise in memory, the way the loader does
    parent, tokenizer = load_causal_lm(model_dir)
    parent_sd_bytes = state_dict_bytes(parent)
    linear_total = count_linear(parent)
    parent_quality = mention_rate(parent, tokenizer, eval_rows)
    variant, _ = load_causal_lm(out_dir)
    variant = apply_recipe(variant, read_recipe(out_dir), "cpu")
    quantized = count_quantized_linear(variant)
    if quantized <= 0:
        raise ModelIntegrityError(f"no Linear layer of {model_dir} was quantised")
    # 4. size and quality
    variant_sd_bytes = state_dict_bytes(variant)
    variant_quality = mention_rate(variant, tokenizer, eval_rows)
    card: dict[str, Any] = {
        "lineage": {
            "parent": parent_info(model_dir),
            "method": "quantize_int8",
            "params": {"backend": backend, **recipe["quantize"]},
            "software": {**software(), "torchao": torchao_version()},
        },
        "recipe": recipe,
        "quantize": {"linear_total": linear_total, "linear_quantized": quantized},
        "size": {
            **size_block(parent_sd_bytes, variant_sd_bytes, "in-memory state_dict serialised with torch.save "
                         "to a BytesIO (parent the same way); on disk the variant stores the parent's weights"),
            "on_disk_bytes": sum((out_dir / f).stat().st_size for f in files if f.endswith(".safetensors")),
        },
        "quality": quality_block(parent_quality, variant_quality, eval_rows),
        "files": sorted([*files, RECIPE]),
    }
    write_card(out_dir, card)
    return card
