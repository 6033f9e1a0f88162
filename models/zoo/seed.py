"""Register the shipped tiny models into a registry the first time it is used.

``make run`` and the tests need real versions to resolve, without training or network:
catalog-copy v1 (briefly trained) and v2 (fully trained, alias ``production``), tiny-image v1
(alias ``production``), and catalog-chat v1: catalog-copy v2 with a chat template, for chat input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genbatch.io import storage
from models.promotion import write_policy
from models.registry import list_versions, model_root, register_version, set_alias

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parent
EXAMPLES = ZOO_DIR.parents[1] / "examples" / "catalog" / "items.jsonl"
GOLDEN_ROWS = 200
# How catalog-copy candidates are judged against production (models.promotion.Policy).
CATALOG_POLICY = {
    "spec": {"task": "text", "generation": {"max_new_tokens": 40, "seed": 7}, "sharding": {"num_shards": 1},
             "quality": {"max_reject_rate": 1.0, "min_success_rate": 0.0, "min_nonempty_rate": 0.0}},
    "metrics": [{"column": "mentions_attributes", "higher_is_better": True, "tolerance": 0.02},
                {"column": "nonempty", "higher_is_better": True, "tolerance": 0.01}],
    "throughput_floor": 0.5,
}
ZOO_MODELS: dict[str, tuple[list[str], str]] = {
    # name: (version dirs in registration order, version dir that becomes production)
    "catalog-copy": (["v1", "v2"], "v2"),
    "tiny-image": (["v1"], "v1"),
    "catalog-chat": (["v1"], "v1"),
}
ZOO_BASES: dict[str, str] = {
    # version dir that holds only what it adds: the version dir whose files it starts from
    "catalog-chat/v1": "catalog-copy/v2",  # catalog-copy v2 plus a chat template (chat_template.jinja)
}


def ensure_zoo_registered(registry: str) -> dict[str, list[int]]:
    """Idempotent: registers only models that have no committed version yet."""
    registered: dict[str, list[int]] = {}
    for name, (dirs, production) in ZOO_MODELS.items():
        if list_versions(registry, name):
            registered[name] = list_versions(registry, name)
            continue
        versions = {}
        for d in dirs:
            with _version_files(f"{name}/{d}") as src:
                meta_path = src / "zoo.json"
                metrics = json.loads(meta_path.read_text()) if meta_path.exists() else {}
                mv = register_version(registry, name, src, lineage={"source": f"models/zoo/{name}/{d}"},
                                      metrics=metrics)
            versions[d] = mv.version
        set_alias(registry, name, "production", versions[production], reason="zoo seed")
        if name == "catalog-copy":
            seed_golden_set(registry, name)
        registered[name] = sorted(versions.values())
        log.info("seeded %s into %s: %s", name, registry, versions)
    return registered


@contextlib.contextmanager
def _version_files(rel: str) -> Iterator[Path]:
    """The folder to register for a zoo version dir: itself, or its base's files with its own on top."""
    base = ZOO_BASES.get(rel)
    if base is None:
        yield ZOO_DIR / rel
        return
    with tempfile.TemporaryDirectory(prefix="genbatch-zoo-") as tmp:
        shutil.copytree(ZOO_DIR / base, tmp, dirs_exist_ok=True)
        shutil.copytree(ZOO_DIR / rel, tmp, dirs_exist_ok=True)
        yield Path(tmp)


def seed_golden_set(registry: str, name: str) -> None:
    """The model's golden evaluation set (the first example rows) and its promotion policy."""
    golden = storage.join(model_root(registry, name), "golden", "eval.jsonl")
    rows = EXAMPLES.read_text(encoding="utf-8").splitlines()[:GOLDEN_ROWS]
    storage.write_text(golden, "\n".join(rows) + "\n")
    write_policy(registry, name, {"golden_set": golden, **CATALOG_POLICY})
