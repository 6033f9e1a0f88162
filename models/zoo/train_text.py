"""Train the tiny ``catalog-copy`` Llama and its BPE tokenizer, deterministically, on 2 CPU cores.

    python -m models.zoo.train_text [--out models/zoo/catalog-copy]

Steps:
1. build the synthetic corpus (:mod:`models.zoo.catalog_corpus`, training combinations only);
2. train a byte-level BPE tokenizer on it and wrap it as a ``PreTrainedTokenizerFast``
   (``<bos>`` prepended by the post-processor, left padding);
3. train a 2-layer ``LlamaForCausalLM`` with the loss on the description tokens only;
4. save ``v1`` (an early checkpoint, clearly worse) and ``v2`` (the end of the same run) as
   safetensors with their tokenizer, generation config and ``zoo.json`` metadata;
5. reload each version from disk and measure its mention rate on the 500 held-out combinations
   (greedy, batched, left padding) — the figure ``zoo.json`` records.

Everything is seeded, single-process and run with ``torch.use_deterministic_algorithms(True)`` and a
fixed thread count, so a rerun on the same software versions reproduces ``model.safetensors`` byte for
byte (``zoo.json`` records its sha256).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from genbatch.io.storage import sha256_file  # noqa: E402
from models.zoo import CATALOG_COPY_DIR  # noqa: E402
from models.zoo.catalog_corpus import (  # noqa: E402
    as_attributes,
    heldout_combinations,
    make_prompt,
    mentions_all,
    training_combinations,
    training_pairs,
)

log = logging.getLogger(__name__)

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
MAX_NEW_TOKENS = 40



def set_determinism(seed: int, threads: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


# 1-2. tokenizer -------------------------------------------------------------------------------


def build_tokenizer(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``lines``; ``<pad>``=0, ``<bos>``=1, ``<eos>``=2."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        model_max_length=128,
        clean_up_tokenization_spaces=False,
    )


# 3. model and data --------------------------------------------------------------------------


def build_model(tokenizer: PreTrainedTokenizerFast, args: argparse.Namespace) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    return model


def encode_corpus(
    pairs: list[tuple[str, str]], tokenizer: PreTrainedTokenizerFast
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (loss on description + eos only).

    The prompt is encoded exactly as at generation time (``<bos>`` + prompt) and the description
    separately (``" " + text + <eos>``), so training sees the same token boundaries as inference.
    """
    prompt_ids = tokenizer([p for p, _ in pairs])["input_ids"]
    desc_ids = tokenizer([" " + d for _, d in pairs], add_special_tokens=False)["input_ids"]
    seqs = [p + d + [tokenizer.eos_token_id] for p, d in zip(prompt_ids, desc_ids, strict=True)]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(seqs), length), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for row, (seq, p) in enumerate(zip(seqs, prompt_ids, strict=True)):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(seq[len(p) :])
    return ids, mask, labels


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# 4. saving ------------------------------------------------------------------------------------


def save_version(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    out: Path,
    meta: dict[str, Any],
) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out)  # transformers 5 writes safetensors only (no safe_serialization flag)
    tokenizer.save_pretrained(out)
    # Portability: name the class older transformers (4.x) and other loaders know, and keep the
    # special_tokens_map.json that transformers 5 no longer writes.
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2, sort_keys=True) + "\n")
    meta = dict(
        meta,
        model_safetensors_sha256=sha256_file(out / "model.safetensors"),
        tokenizer_json_sha256=sha256_file(out / "tokenizer.json"),
    )
    (out / "zoo.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for path in out.iterdir():
        path.chmod(0o644)  # safetensors are written 0600 by default


# 5. evaluation --------------------------------------------------------------------------------


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: list[str], batch_size: int = 128) -> list[str]:
    """Greedy, batched, left-padded generation; returns the new text only, stopped at EOS."""
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        new = gen[:, enc["input_ids"].shape[1] :]
        outputs.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return outputs


def mention_rate(version_dir: Path) -> tuple[float, float, list[str]]:
    """(mention rate on the held-out combinations, seconds, texts) for a saved version."""
    model = AutoModelForCausalLM.from_pretrained(version_dir, use_safetensors=True, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(version_dir, local_files_only=True)
    attrs = [as_attributes(c) for c in heldout_combinations()]
    t0 = time.perf_counter()
    texts = generate(model, tokenizer, [make_prompt(a) for a in attrs])
    seconds = time.perf_counter() - t0
    hits = sum(mentions_all(t, a) for t, a in zip(texts, attrs, strict=True))
    return hits / len(attrs), seconds, texts


# main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=CATALOG_COPY_DIR)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--corpus-size", type=int, default=20000)
    p.add_argument("--vocab-size", type=int, default=640)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--v1-steps", type=int, default=115)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--no-eval", action="store_true", help="skip the held-out mention-rate check")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    t_start = time.perf_counter()

    # 1. corpus
    pairs = list(training_pairs(args.corpus_size, args.seed))
    # 2. tokenizer
    tokenizer = build_tokenizer([f"{p} {d}" for p, d in pairs], args.vocab_size)
    # 3. model and data
    model = build_model(tokenizer, args)
    ids, mask, labels = encode_corpus(pairs, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("corpus=%d seq_len=%d vocab=%d params=%d", len(pairs), ids.shape[1], len(tokenizer), n_params)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(pairs), generator=gen)
    cursor = 0
    losses: list[float] = []
    base_meta: dict[str, Any] = {
        "model": "catalog-copy",
        "architecture": "LlamaForCausalLM",
        "seed": args.seed,
        "threads": args.threads,
        "corpus_size": len(pairs),
        "training_combinations": len(training_combinations()),
        "heldout_combinations": len(heldout_combinations()),
        "batch_size": args.batch_size,
        "peak_lr": args.lr,
        "num_parameters": n_params,
        "vocab_size": len(tokenizer),
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "command": " ".join(["python -m models.zoo.train_text", *(argv if argv is not None else sys.argv[1:])]),
    }
    versions = {1: args.v1_steps, 2: args.steps}
    model.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(pairs), generator=gen), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        width = int(mask[idx].sum(dim=1).max())
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        out = model(input_ids=ids[idx, :width], attention_mask=mask[idx, :width], labels=labels[idx, :width])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.detach().item())
        if step % 50 == 0 or step + 1 == args.steps:
            log.info("step %d loss %.4f (%.1fs)", step, losses[-1], time.perf_counter() - t_start)
        for version, at in versions.items():
            if step + 1 == at:
                # 4. save (v1 is an early checkpoint of this same run)
                tail = losses[-20:]
                meta = dict(
                    base_meta,
                    version=version,
                    steps=at,
                    final_loss=round(sum(tail) / len(tail), 4),
                    train_seconds=round(time.perf_counter() - t_start, 1),
                )
                save_version(model, tokenizer, args.out / f"v{version}", meta)
                log.info("saved v%d at step %d", version, at)
    train_seconds = time.perf_counter() - t_start

    # 5. evaluate each saved version from disk
    if not args.no_eval:
        for version in versions:
            vdir = args.out / f"v{version}"
            rate, seconds, texts = mention_rate(vdir)
            meta = json.loads((vdir / "zoo.json").read_text())
            meta.update(
                heldout_mention_rate=round(rate, 4),
                heldout_generate_seconds=round(seconds, 2),
                total_train_seconds=round(train_seconds, 1),
                sample_outputs=texts[:3],
            )
            (vdir / "zoo.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            log.info("v%d: mention rate %.4f (500 rows in %.1fs) e.g. %r", version, rate, seconds, texts[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
