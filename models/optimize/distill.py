"""Knowledge distillation: a smaller Llama student trained on the teacher's logits (KL).

The student shares the teacher's tokenizer (and so its vocabulary) and has a smaller ``LlamaConfig``
(fewer layers, narrower hidden size; head dim kept). Training data is the catalog corpus
(:mod:`models.zoo.catalog_corpus`, training combinations only — the example rows stay held out): each
sequence is ``<bos> prompt description <eos>``, the teacher's next-token distribution over the
description tokens is the target, and the loss is ``T² · KL(teacher_T ‖ student_T)`` there.

Deterministic: seeded corpus, seeded init and batch order (a forked RNG, so the caller's global RNG
is untouched), ``torch.use_deterministic_algorithms(True)`` for the duration, fixed thread count.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None) -> Iterator[None]:
    """Seeded, deterministic torch for the block; restores the caller's RNG, flags and threads."""
    import torch

    was_deterministic = torch.are_deterministic_algorithms_enabled()
    old_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        if threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(old_threads)


def student_config(teacher_config: Any, *, hidden_size: int, layers: int, heads: int | None,
                   intermediate_size: int | None) -> Any:
    """The teacher's config with a smaller body (same vocab, special tokens, positions, head dim)."""
    from transformers import LlamaConfig

    head_dim = int(getattr(teacher_config, "head_dim", None) or teacher_config.hidden_size // teacher_config.num_attention_heads)
    heads = heads or max(1, hidden_size // head_dim)
    if hidden_size % heads:
        raise SpecError(f"hidden_size {hidden_size} is not divisible by heads {heads}; pick a multiple")
    if hidden_size <= 0 or layers <= 0:
        raise SpecError(f"student hidden_size {hidden_size} and layers {layers} must be positive")
    return LlamaConfig(
        vocab_size=teacher_config.vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 3 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=hidden_size // heads,
        max_position_embeddings=teacher_config.max_position_embeddings,
        rms_norm_eps=teacher_config.rms_norm_eps,
        initializer_range=teacher_config.initializer_range,
        tie_word_embeddings=teacher_config.tie_word_embeddings,
        pad_token_id=teacher_config.pad_token_id,
        bos_token_id=teacher_config.bos_token_id,
        eos_token_id=teacher_config.eos_token_id,
    )


def kd_loss(student_logits: Any, teacher_logits: Any, labels: Any, temperature: float) -> Any:
    """``T² · KL(teacher ‖ student)`` averaged over the positions whose next token has a label."""
    import torch.nn.functional as F

    mask = labels[:, 1:] != -100  # logits at t predict token t+1
    s = student_logits[:, :-1][mask] / temperature
    t = teacher_logits[:, :-1][mask] / temperature
    kl = F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    return kl * temperature**2


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def distill(teacher_dir: Path, out_dir: Path, *, steps: int, hidden_size: int, layers: int,
            heads: int | None = None, intermediate_size: int | None = None, batch_size: int = 64,
            lr: float = 3e-3, temperature: float = 1.0, corpus_size: int = 20000, seed: int = 1234,
            threads: int | None = 1, eval_rows: int = DEFAULT_EVAL_ROWS) -> dict[str, Any]:
    """Train a smaller student of ``teacher_dir`` on its logits and save it to ``out_dir``.

    Steps: 1. check inputs, load the teacher and build the student config; 2. encode the corpus;
    3. train for ``steps`` (AdamW, warm-up + cosine, KL on description tokens); 4. save (safetensors)
    with the teacher's tokenizer and generation config; 5. reload and measure size and quality.
    Returns the variant's card (also written as ``optimization.json``).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from models.zoo.catalog_corpus import training_pairs
    from models.zoo.train_text import encode_corpus

    # 1. inputs
    if steps <= 0:
        raise SpecError(f"distillation steps {steps!r} must be positive")
    teacher_dir = check_model_dir(Path(teacher_dir))
    teacher, tokenizer = load_causal_lm(teacher_dir)
    config = student_config(teacher.config, hidden_size=hidden_size, layers=layers, heads=heads,
                            intermediate_size=intermediate_size)
    out_dir = prepare_out_dir(Path(out_dir))
    started = time.perf_counter()
    losses: list[float] = []
    with deterministic(seed, threads):
        # 2. corpus: prompts exactly as at generation time, descriptions from the training split
        pairs = list(training_pairs(corpus_size, seed))
        ids, mask, labels = encode_corpus(pairs, tokenizer)
        student = LlamaForCausalLM(config)
        student.generation_config = teacher.generation_config
        # 3. train
        opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(pairs), generator=gen), 0
        warmup = max(1, min(50, steps // 10))
        student.train()
        for step in range(steps):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(pairs), generator=gen), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            width = int(mask[idx].sum(dim=1).max())
            batch_ids, batch_mask, batch_labels = ids[idx, :width], mask[idx, :width], labels[idx, :width]
            with torch.no_grad():
                teacher_logits = teacher(input_ids=batch_ids, attention_mask=batch_mask).logits
            student_logits = student(input_ids=batch_ids, attention_mask=batch_mask).logits
            loss = kd_loss(student_logits, teacher_logits, batch_labels, temperature)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr, warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            if step % 100 == 0 or step + 1 == steps:
                log.info("distill step %d/%d kd loss %.4f (%.1fs)", step, steps, losses[-1],
                         time.perf_counter() - started)
    train_seconds = time.perf_counter() - started
    # 4. save: teacher's tokenizer files, then the student's config/generation config/weights
    copy_model_files(teacher_dir, out_dir, skip_weights=True)
    student.eval().save_pretrained(out_dir)
    if (teacher_dir / "generation_config.json").is_file():
        shutil.copyfile(teacher_dir / "generation_config.json", out_dir / "generation_config.json")
    # 5. reload from disk and measure
    variant = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True, use_safetensors=True).eval()
    tail = losses[-20:]
    card: dict[str, Any] = {
        "lineage": {
            "parent": parent_info(teacher_dir),
            "method": "distill",
            "params": {"steps": steps, "hidden_size": hidden_size, "layers": layers,
                       "heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
                       "batch_size": batch_size, "lr": lr, "temperature": temperature,
                       "corpus": f"models.zoo.catalog_corpus.training_pairs({corpus_size}, seed={seed})",
                       "loss": "T^2 * KL(teacher || student) on description tokens", "seed": seed,
                       "threads": threads or torch.get_num_threads()},
            "software": software(),
        },
        "distill": {"params": [count_params(teacher), count_params(variant)],
                    "final_kd_loss": round(sum(tail) / len(tail), 4), "train_seconds": round(train_seconds, 1)},
        "size": size_block(weights_bytes(teacher_dir), weights_bytes(out_dir), "safetensors file bytes"),
        "quality": quality_block(mention_rate(teacher, tokenizer, eval_rows), mention_rate(variant, tokenizer, eval_rows),
                                 eval_rows),
        "files": sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()),
    }
    write_card(out_dir, card)
    return card
