"""Build the tiny text-to-image pipeline ``tiny-image`` deterministically from config (no training).

    python -m models.zoo.build_image [--out models/zoo/tiny-image/v1]

A standard ``StableDiffusionPipeline`` — tiny ``UNet2DConditionModel``, ``AutoencoderKL``,
``CLIPTextModel`` and ``CLIPTokenizer``, ``DDIMScheduler``, no safety checker — with seeded random
weights: 64x64 RGB images from 16x16x4 latents. The pictures are noise-like; the pipeline exists so
the image worker, registry and benchmarks run a real diffusers architecture end to end on a CPU.

Steps:
1. write a tiny CLIP BPE vocabulary (``vocab.json``/``merges.txt``) from the catalog words;
2. build each component from a config under a fixed seed;
3. save with ``save_pretrained(..., safe_serialization=True)`` and ``zoo.json`` metadata;
4. reload from disk and check that one seed gives identical pixels twice and another seed differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from models.zoo import TINY_IMAGE_DIR
from models.zoo.catalog_corpus import COLOURS, ITEMS, MATERIALS, STYLES

log = logging.getLogger(__name__)

SEED = 20240611
IMAGE_SIZE = 64
TEXT_MAX_LENGTH = 32
DEFAULT_STEPS = 4
VAE_BLOCKS = (16, 32, 32)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
EXTRA_WORDS = ("a", "an", "the", "of", "in", "on", "with", "and", "photo", "product", "studio")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply BPE merges (lowest rank first) to one word's symbols."""
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, -1), i) for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))]
        ranked = [(r, i) for r, i in pairs if r >= 0]
        if not ranked:
            break
        _, i = min(ranked)
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """A tiny CLIP-style BPE: all bytes (plain and word-final) plus merges that make each catalog
    word one token.

    Each word is first split by the merges so far, then its pieces are joined left to right by new
    merges; new merges rank after all earlier ones, so no earlier word's tokenisation changes.
    """
    byte_chars = list(_bytes_to_unicode().values())
    tokens: list[str] = byte_chars + [c + "</w>" for c in byte_chars]
    ranks: dict[tuple[str, str], int] = {}
    words = sorted({*COLOURS, *MATERIALS, *ITEMS, *STYLES, *EXTRA_WORDS})
    for word in words:
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        left = pieces[0]
        for right in pieces[1:]:
            ranks[(left, right)] = len(ranks)
            left = left + right
            tokens.append(left)
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for tok in tokens:
        vocab.setdefault(tok, len(vocab))
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    return vocab, merges


def build_tokenizer(workdir: Path) -> CLIPTokenizer:
    vocab, merges = clip_vocab_and_merges()
    vocab_file, merges_file = workdir / "vocab.json", workdir / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=TEXT_MAX_LENGTH)


def build_pipeline(workdir: Path) -> Any:
    """The pipeline with seeded random weights (typed ``Any``: diffusers' classes confuse mypy)."""
    # 1. tokenizer
    tokenizer = build_tokenizer(workdir)
    # 2. components, each under a fixed seed
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TEXT_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=VAE_BLOCKS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )
    latent_size = IMAGE_SIZE // 2 ** (len(VAE_BLOCKS) - 1)  # the pipeline's vae_scale_factor
    torch.manual_seed(SEED + 2)
    unet = UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 48),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe: Any = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe


def load(path: Path) -> Any:
    """Load a saved tiny-image version from disk only (safetensors, no hub)."""
    pipe = StableDiffusionPipeline.from_pretrained(path, use_safetensors=True, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(pipe: Any, prompt: str, seed: int, steps: int = DEFAULT_STEPS) -> Any:
    """One image as a float array (1, H, W, 3) in [0, 1]."""
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.inference_mode():
        return pipe(prompt, num_inference_steps=steps, generator=generator, output_type="np").images


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TINY_IMAGE_DIR / "v1")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()

    # 1-2. build
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(Path(tmp))
        # 3. save
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        pipe.save_pretrained(args.out, safe_serialization=True)
        # transformers 5 saves tokenizer.json only; keep the slow-tokenizer files for older loaders
        for name in ("vocab.json", "merges.txt"):
            shutil.copyfile(Path(tmp) / name, args.out / "tokenizer" / name)
    build_seconds = time.perf_counter() - t0

    # 4. reload and check determinism
    pipe = load(args.out)
    prompt = "a red leather backpack"
    render(pipe, prompt, seed=0)  # warm-up
    t1 = time.perf_counter()
    a = render(pipe, prompt, seed=0)
    seconds_per_image = time.perf_counter() - t1
    b = render(pipe, prompt, seed=0)
    c = render(pipe, prompt, seed=1)
    if not np.array_equal(a, b):
        raise RuntimeError("same seed gave different pixels")
    if np.array_equal(a, c):
        raise RuntimeError("different seeds gave identical pixels")
    if not np.isfinite(a).all():
        raise RuntimeError("non-finite pixels")

    files = sorted(f for f in args.out.rglob("*") if f.is_file())
    for f in files:
        f.chmod(0o644)
    meta = {
        "model": "tiny-image",
        "version": 1,
        "pipeline": "StableDiffusionPipeline",
        "seed": SEED,
        "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "latent_shape": [4, pipe.unet.config.sample_size, pipe.unet.config.sample_size],
        "default_num_inference_steps": DEFAULT_STEPS,
        "scheduler": type(pipe.scheduler).__name__,
        "num_parameters": {
            name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("unet", "vae", "text_encoder")
        },
        "seconds_per_image": round(seconds_per_image, 4),
        "build_seconds": round(build_seconds, 2),
        "safetensors_sha256": {str(f.relative_to(args.out)): _sha256(f) for f in files if f.suffix == ".safetensors"},
        "torch_version": torch.__version__,
        "diffusers_version": diffusers.__version__,
        "transformers_version": transformers.__version__,
        "command": "python -m models.zoo.build_image",
    }
    (args.out / "zoo.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (args.out / "zoo.json").chmod(0o644)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    log.info(
        "saved %s: %d bytes, %.3fs per %dx%d image at %d steps, mean pixel %.3f",
        args.out,
        size,
        seconds_per_image,
        IMAGE_SIZE,
        IMAGE_SIZE,
        DEFAULT_STEPS,
        float(a.mean()),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
