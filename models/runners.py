"""Generation runners: load a verified model once per process, then run batches.

Loading (``load``) is separate from running a batch (``run_batch``), as in Beam's
RunInference, so tests can hand in a tiny model and the worker never reloads per item.
Heavy imports (torch, transformers, diffusers) happen inside the functions on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

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
    """A causal LM + tokenizer; greedy decoding is batched, sampling is seeded per item."""

    def __init__(self, model_dir: Path, *, generation: dict[str, Any], precision: str, device: str) -> None:
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

    def token_length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    fixed_output_length = False  # benchmarks set it: every row decodes max_new_tokens (no early EOS)

    def _settings(self, item: Item) -> dict[str, Any]:
        merged = {**self.generation, **item.params}
        return {
            "max_new_tokens": int(merged["max_new_tokens"]),
            "temperature": float(merged["temperature"]),
            "top_p": float(merged["top_p"]),
        }

    def run_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        settings = self._settings(items[0])
        torch = self.torch
        enc = self.tokenizer([i.prompt for i in items], return_tensors="pt", padding=True).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings["max_new_tokens"],
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": False,
        }
        if self.fixed_output_length:
            kwargs["min_new_tokens"] = settings["max_new_tokens"]
        if settings["temperature"] > 0:
            # Sampling with one generator per row: an item's tokens depend only on its own seed,
            # never on its batch neighbours. Greedy decoding then takes the token drawn here.
            kwargs["logits_processor"] = [PerRowSampler([i.seed for i in items], settings["temperature"], settings["top_p"])]
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        counts = (new_tokens != self.tokenizer.pad_token_id).sum(dim=1).tolist()
        return [{"output": t.strip(), "new_tokens": int(c)} for t, c in zip(texts, counts, strict=True)]


class PerRowSampler:
    """A logits processor that samples each row with its own ``torch.Generator``.

    transformers draws one ``torch.multinomial`` over the whole batch, so a row's sample would
    depend on its neighbours. This processor applies temperature and top-p, draws per row,
    and returns scores that make the chosen token the only candidate.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import torch

        self.torch = torch
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        probs = torch.softmax(scores.float() / self.temperature, dim=-1).cpu()
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        chosen = torch.stack([torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(self.generators)])
        forced = torch.full_like(scores, float("-inf"))
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


def load_runner(task: str, model_dir: Path, *, generation: dict[str, Any], precision: str, device: str) -> Any:
    cls = TextRunner if task == "text" else ImageRunner
    log.info("loading %s runner from %s on %s (%s)", task, model_dir, device, precision)
    return cls(model_dir, generation=generation, precision=precision, device=device)
