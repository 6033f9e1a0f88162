"""Real-size models through genbatch's real worker path, built from config with random weights (issue 19).

``python -m bench.gpu_realsize [--smoke] [--task text|image|all] [--device cuda|cpu] [--compile]``

Nothing is downloaded. Each model is built from a config on the device itself, in bf16 on a GPU (fp32 on a
CPU), saved as safetensors and registered into a temporary registry (``models.registry.register_version``:
sha256 of every file in ``card.json``), and the shard worker loads it from there as a run would
(``models.worker.run_subshard`` → ``fetch_verified`` → ``load_runner``).

text   a Llama of ~1.1 B parameters (hidden 2048, 16 layers, 32 heads, vocab 32k, 2k positions); prompts of
       128-1,024 tokens, Pareto-tailed; 128 new tokens, fixed length (no early EOS). Legs: genbatch's worker
       (its own loop) and ``model.generate`` on the same sorted batches; with ``--compile`` on CUDA also
       ``generate`` with ``cache_implementation="static"`` and a compiled forward. Decode-step time at batch 1
       against the roofline (weight bytes ÷ the GPU's memory bandwidth) where the bandwidth is known.
image  Stable-Diffusion-1.5-sized UNet (320/640/1280/1280, cross-attention 768), VAE (128/256/512/512) and
       CLIP text encoder (768 wide, 12 layers), 512×512, 25 steps: the worker against a per-prompt loop.

``--smoke`` shrinks every config so the same code runs on a CPU in seconds (``make test`` runs it): its
figures are a check that the path works, never a measurement. One JSON line per task on stdout.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo"
TEXT_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PROMPT_SEED = 20261207
HBM_BYTES_PER_S = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12}
"""Peak memory bandwidth by GPU name (vendor datasheets; SXM parts); unknown GPUs get no roofline."""

TEXT = {
    "real": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048},
    "smoke": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 4, "vocab_size": 1024, "max_position_embeddings": 256},
}
TEXT_RUN = {"real": {"items": 256, "min_prompt": 128, "max_prompt": 1024, "new_tokens": 128},
            "smoke": {"items": 24, "min_prompt": 16, "max_prompt": 96, "new_tokens": 8}}
IMAGE = {
    "real": {"unet": (320, 640, 1280, 1280), "vae": (128, 256, 512, 512), "text_hidden": 768, "text_layers": 12,
             "size": 512, "steps": 25, "items": 16, "groups": 32},
    "smoke": {"unet": (32, 64), "vae": (16, 32), "text_hidden": 32, "text_layers": 2, "size": 32, "steps": 2,
              "items": 4, "groups": 8},
}


def _dtype(device: str) -> Any:
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def build_text_model(out: Path, size: str, device: str) -> int:
    """A random-weight Llama saved as safetensors with the zoo's catalog tokenizer; returns its parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TEXT[size], bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(_dtype(device))
    model.save_pretrained(out, safe_serialization=True)
    for name in TEXT_TOKENIZER_FILES:  # 551 tokens, all below the model's vocabulary: any prompt encodes
        shutil.copy(ZOO / "catalog-copy" / "v2" / name, out / name)
    params = sum(p.numel() for p in model.parameters())
    del model
    return int(params)


def build_image_pipeline(out: Path, size: str, device: str) -> int:
    """A random-weight Stable Diffusion pipeline of SD-1.5 shape (or a tiny one for --smoke); returns parameters."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    c = IMAGE[size]
    tokenizer = CLIPTokenizer.from_pretrained(ZOO / "tiny-image" / "v1" / "tokenizer")
    scheduler = DDIMScheduler.from_pretrained(ZOO / "tiny-image" / "v1" / "scheduler")
    torch.manual_seed(0)
    blocks = len(c["unet"])
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=c["size"] // 8, in_channels=4, out_channels=4, block_out_channels=c["unet"],
            layers_per_block=2, cross_attention_dim=c["text_hidden"], attention_head_dim=8, norm_num_groups=c["groups"],
            down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1))
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=c["vae"], layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * len(c["vae"]), up_block_types=("UpDecoderBlock2D",) * len(c["vae"]),
            sample_size=c["size"], norm_num_groups=c["groups"])
        text = CLIPTextModel(CLIPTextConfig(
            vocab_size=max(len(tokenizer), 49408 if size == "real" else len(tokenizer)), hidden_size=c["text_hidden"],
            intermediate_size=4 * c["text_hidden"], num_hidden_layers=c["text_layers"],
            num_attention_heads=max(1, c["text_hidden"] // 64), max_position_embeddings=77,
            projection_dim=c["text_hidden"], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae.to(_dtype(device)), text_encoder=text.to(_dtype(device)), tokenizer=tokenizer,
                                   unet=unet.to(_dtype(device)), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return int(sum(p.numel() for m in (unet, vae, text) for p in m.parameters()))


def register(registry: Path, name: str, src: Path) -> Any:
    """The built model as version 1 of ``name`` in ``registry`` (card.json with every file's sha256)."""
    from models.registry import register_version

    return register_version(str(registry), name, src, lineage={"source": "bench.gpu_realsize: random init from config"})


def text_prompts(tokenizer: Any, n: int, low: int, high: int) -> list[str]:
    """Catalog attribute text cut to a Pareto-tailed token length between ``low`` and ``high``."""
    rng = random.Random(PROMPT_SEED)
    words = (ZOO / "README.md").read_text(encoding="utf-8").split()
    prompts = []
    for _ in range(n):
        target = min(high, int(low * rng.paretovariate(1.2)))
        text = " ".join(rng.choice(words) for _ in range(target))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: target - 1]
        prompts.append(tokenizer.decode(ids))
    return prompts


def _run_dir(root: Path, task: str, mv: Any, generation: dict[str, Any], prompts: list[str]) -> str:
    from bench.worker_throughput import prepare_run_dir, shard_items

    return prepare_run_dir(root, task, mv.name, Path(mv.uri), generation, shard_items(prompts))


def _accounted(run_dir: str, n: int) -> dict[str, int]:
    from genbatch.run.layout import RunLayout
    from genbatch.run.records import iter_many, output_files

    ids = [r["id"] for r in iter_many(output_files(RunLayout(run_dir), 1))]
    return {"items": n, "written": len(ids), "lost": n - len(set(ids)), "doubled": len(ids) - len(set(ids))}


def bench_text(tmp: Path, size: str, device: str, compile_: bool) -> dict[str, Any]:
    import torch

    from models.registry import fetch_verified
    from models.runners import Item, TextRunner
    from models.worker import AUTO_BATCH, run_subshard

    run = TEXT_RUN[size]
    built = tmp / "text-build"
    params = build_text_model(built, size, device)
    mv = register(tmp / "registry", "realsize-text", built)
    shutil.rmtree(built)
    generation = {"max_new_tokens": run["new_tokens"], "temperature": 0.0, "top_p": 1.0, "batch_size": "auto"}
    model_dir = fetch_verified(mv, tmp / "fetched-text")  # the worker's own integrity path, once for the side legs
    runner = TextRunner(model_dir, generation=generation, precision="auto", device=device)
    runner.fixed_output_length = True
    prompts = text_prompts(runner.tokenizer, run["items"], run["min_prompt"], run["max_prompt"])
    lengths = sorted(runner.token_length(p) for p in prompts)
    weight_bytes = sum(p.numel() * p.element_size() for p in runner.model.parameters())

    # (a) the worker, loading the registered version itself (sha256 checks, then load_runner)
    run_dir = _run_dir(tmp / "runs-text", "text", mv, generation, prompts)
    t0 = time.perf_counter()
    stats = run_subshard(run_dir, 0, 0, 1, device)
    worker_s = time.perf_counter() - t0 - float(stats["model_load_s"])
    accounted = _accounted(run_dir, len(prompts))

    # (b) model.generate on the worker's own batches (sorted by length, its batch size)
    items = [Item(f"i{i}", p, i, {}, None, {}) for i, p in enumerate(sorted(prompts, key=runner.token_length))]
    batch = AUTO_BATCH["text"][1]  # the batch the worker's auto size reaches (its cap)
    legs: dict[str, float] = {}
    for name, own_loop in (("worker_own_loop_in_process", runner.own_loop), ("generate", "")):
        runner.own_loop = own_loop
        t0 = time.perf_counter()
        for i in range(0, len(items), batch):
            runner.run_batch(items[i:i + batch])
        legs[name] = time.perf_counter() - t0
    if compile_ and device.startswith("cuda"):
        legs["generate_static_compiled"] = _static_compiled(runner, items, batch, run["new_tokens"])

    # decode-step time at batch 1: (time for N new tokens - time for 1) / (N - 1)
    one = [items[len(items) // 2]]

    def timed(n_new: int) -> float:
        runner.generation = {**generation, "max_new_tokens": n_new}
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        runner.run_batch(one)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    timed(2)
    step_s = (timed(run["new_tokens"]) - timed(1)) / (run["new_tokens"] - 1)
    bandwidth = next((bw for key, bw in HBM_BYTES_PER_S.items() if key in _device_name(device)), None)
    roofline_s = weight_bytes / bandwidth if bandwidth else None
    n = len(prompts)
    return {
        "bench": "gpu_realsize", "task": "text", "size": size, "device": _device(device), "parameters": params,
        "weight_bytes": weight_bytes, "prompt_tokens": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                                                         "max": lengths[-1]},
        "new_tokens": run["new_tokens"], "items": n,
        "worker": {"items_per_s": round(n / worker_s, 3), "tokens_per_s": round(n * run["new_tokens"] / worker_s, 1),
                   "model_load_s": round(float(stats["model_load_s"]), 3), "stats": stats, "accounted": accounted},
        "legs_items_per_s": {k: round(n / v, 3) for k, v in legs.items()},
        "worker_vs_generate": round(legs["generate"] / legs["worker_own_loop_in_process"], 3),
        "decode_step_batch1_s": round(step_s, 6),
        "roofline_step_s": None if roofline_s is None else round(roofline_s, 6),
        "of_roofline": None if roofline_s is None else round(roofline_s / step_s, 3),
        "smoke": size == "smoke",
    }


def _static_compiled(runner: Any, items: list[Any], batch: int, new_tokens: int) -> float:
    """``generate`` with a static KV cache and a compiled forward (CUDA only), after one warm-up batch."""
    import torch

    model, tok = runner.model, runner.tokenizer
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "cache_implementation": "static", "pad_token_id": tok.pad_token_id}
    enc = tok([it.prompt for it in items[:batch]], return_tensors="pt", padding=True).to(runner.device)
    model.generate(**enc, **kwargs)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        enc = tok([it.prompt for it in items[i:i + batch]], return_tensors="pt", padding=True).to(runner.device)
        model.generate(**enc, **kwargs)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_image(tmp: Path, size: str, device: str) -> dict[str, Any]:
    from models.registry import fetch_verified
    from models.runners import Item, load_runner
    from models.worker import run_subshard

    c = IMAGE[size]
    built = tmp / "image-build"
    params = build_image_pipeline(built, size, device)
    mv = register(tmp / "registry", "realsize-image", built)
    shutil.rmtree(built)
    generation = {"num_inference_steps": c["steps"], "guidance_scale": 1.0, "height": c["size"], "width": c["size"],
                  "batch_size": "auto"}
    prompts = [f"a {colour} chair, studio photo" for colour in ("red", "navy", "olive", "black") * c["items"]][:c["items"]]
    run_dir = _run_dir(tmp / "runs-image", "image", mv, generation, prompts)
    t0 = time.perf_counter()
    stats = run_subshard(run_dir, 0, 0, 1, device)
    worker_s = time.perf_counter() - t0 - float(stats["model_load_s"])
    runner = load_runner("image", fetch_verified(mv, tmp / "fetched-image"), generation=generation, precision="auto",
                         device=device)
    items = [Item(f"i{i}", p, i, {}, None, {}) for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    for it in items:  # the per-prompt loop
        runner.run_batch([it])
    loop_s = time.perf_counter() - t0
    n = len(prompts)
    return {
        "bench": "gpu_realsize", "task": "image", "size": size, "device": _device(device), "parameters": params,
        "resolution": c["size"], "steps": c["steps"], "items": n,
        "worker": {"images_per_s": round(n / worker_s, 3), "stats": stats, "accounted": _accounted(run_dir, n)},
        "per_prompt_loop_images_per_s": round(n / loop_s, 3),
        "worker_vs_loop": round(loop_s / worker_s, 3),
        "smoke": size == "smoke",
    }


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"


def _device(device: str) -> dict[str, Any]:
    """The exact device the figures come from (name, memory, driver, torch)."""
    import torch

    info: dict[str, Any] = {"device": device, "name": _device_name(device), "torch": torch.__version__}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}")
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_realsize", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configs: checks the path on a CPU, measures nothing")
    parser.add_argument("--task", choices=("text", "image", "all"), default="all")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--compile", action="store_true", help="CUDA: also generate with a static cache + torch.compile")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = "smoke" if args.smoke else "real"
    if size == "real" and not device.startswith("cuda"):
        print("bench.gpu_realsize: real-size models need a GPU (pass --smoke to check the path on a CPU)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="genbatch-realsize-") as tmp:
        if args.task in ("text", "all"):
            print(json.dumps(bench_text(Path(tmp), size, device, args.compile)), flush=True)
        if args.task in ("image", "all"):
            print(json.dumps(bench_image(Path(tmp), size, device)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
