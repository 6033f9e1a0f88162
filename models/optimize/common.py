"""Shared helpers of the optimisation recipes: safe loading, copying, lineage, size and quality.

Heavy imports (torch, transformers) happen inside the functions, as everywhere in ``models``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from genbatch.errors import ModelIntegrityError
from genbatch.io.storage import sha256_file
from models.registry import refuse_pickle

log = logging.getLogger(__name__)

#: files of a model folder that describe how *that* folder was made; never copied into a variant
METADATA_FILES = frozenset({"card.json", "zoo.json", "optimization.json", "recipe.json"})
#: the card an optimisation writes into its variant folder (the dict each recipe returns)
OPTIMIZATION_CARD = "optimization.json"
DEFAULT_EVAL_ROWS = 200
EVAL_MAX_NEW_TOKENS = 40



def check_model_dir(model_dir: Path) -> Path:
    """A saved model folder with safetensors weights and no pickle file, or a named error."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelIntegrityError(f"{model_dir} has no config.json; pass a save_pretrained folder")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    for path in files:
        refuse_pickle(path.name)
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelIntegrityError(f"{model_dir} holds no .safetensors weights; re-save it with save_pretrained")
    return model_dir


def prepare_out_dir(out_dir: Path) -> Path:
    """A new, empty output folder: variants are immutable, so an existing non-empty one is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} is not empty; variants are never overwritten — pick a new one")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def copy_model_files(src: Path, dst: Path, *, skip_weights: bool = False) -> list[str]:
    """Copy a model folder's files (config, tokenizer, weights) but not its own metadata cards."""
    copied = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if rel.name in METADATA_FILES or (skip_weights and path.suffix == ".safetensors"):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(rel.as_posix())
    return copied


def assert_no_pickle(folder: Path) -> None:
    """Every file a recipe wrote is safetensors or text: refuse anything pickle-shaped."""
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        refuse_pickle(path.name)
        if path.suffix not in {".safetensors", ".json", ".txt", ".model", ".md"}:
            raise ModelIntegrityError(f"unexpected file {path} in a variant folder; only safetensors and text are written")


def parent_info(model_dir: Path) -> dict[str, Any]:
    """Who the parent is: its folder, name/version (from a registry card or a zoo.json) and weights digest."""
    info: dict[str, Any] = {"dir": str(Path(model_dir).resolve())}
    for card_name in ("card.json", "zoo.json"):
        card_path = model_dir / card_name
        if card_path.is_file():
            card = json.loads(card_path.read_text())
            info["name"] = card.get("name") or card.get("model")
            info["version"] = card.get("version")
            break
    info["weights_sha256"] = {
        p.relative_to(model_dir).as_posix(): sha256_file(p) for p in sorted(model_dir.rglob("*.safetensors"))
    }
    return info


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).rglob("*.safetensors"))


def state_dict_bytes(model: Any) -> int:
    """Bytes of ``model.state_dict()`` serialised in memory (measurement only: nothing touches disk)."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def software() -> dict[str, str]:
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__}


def load_causal_lm(model_dir: Path) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from a verified folder: safetensors only, local files only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, trust_remote_code=False, use_safetensors=True
    )
    return model.eval(), tokenizer


def eval_rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` example rows' attributes: the held-out split, i.e. ``examples/catalog/items.jsonl``."""
    from models.zoo.catalog_corpus import as_attributes, heldout_combinations

    combos = heldout_combinations()
    if not 0 < n <= len(combos):
        raise ValueError(f"eval rows {n} out of range; the example catalog has {len(combos)} rows")
    return [as_attributes(c) for c in combos[:n]]


def greedy_texts(model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
                 batch_size: int = 100) -> list[str]:
    """Greedy, batched, left-padded generation; the new text only, stopped at EOS."""
    import torch

    texts: list[str] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1] :]
            texts.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts


def mention_rate(model: Any, tokenizer: Any, rows: int = DEFAULT_EVAL_ROWS) -> float:
    """Share of the first ``rows`` example rows whose greedy output names colour, material and item."""
    from models.zoo.catalog_corpus import make_prompt, mentions_all

    attrs = eval_rows(rows)
    texts = greedy_texts(model, tokenizer, [make_prompt(a) for a in attrs])
    return sum(mentions_all(t, a) for t, a in zip(texts, attrs, strict=True)) / len(attrs)


def quality_block(parent: float, variant: float, rows: int) -> dict[str, Any]:
    return {
        "metric": "mention_rate",
        "rows": rows,
        "parent": round(parent, 4),
        "variant": round(variant, 4),
        "delta": round(variant - parent, 4),
    }


def size_block(parent_bytes: int, variant_bytes: int, measured_as: str) -> dict[str, Any]:
    return {
        "parent_bytes": parent_bytes,
        "variant_bytes": variant_bytes,
        "ratio": round(variant_bytes / parent_bytes, 4),
        "measured_as": measured_as,
    }


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    (out_dir / OPTIMIZATION_CARD).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    assert_no_pickle(out_dir)
    log.info("wrote %s variant to %s: size ratio %s, quality %s", card["lineage"]["method"], out_dir,
             card["size"]["ratio"], card["quality"])
