"""Register the shipped tiny models into a registry the first time it is used.

``make run`` and the tests need real versions to resolve, without training or network:
catalog-copy v1 (briefly trained) and v2 (fully trained, alias ``production``), and
tiny-image v1 (alias ``production``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from models.registry import list_versions, register_version, set_alias

log = logging.getLogger(__name__)

ZOO_DIR = Path(__file__).resolve().parent
ZOO_MODELS: dict[str, tuple[list[str], str]] = {
    # name: (version dirs in registration order, version dir that becomes production)
    "catalog-copy": (["v1", "v2"], "v2"),
    "tiny-image": (["v1"], "v1"),
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
            src = ZOO_DIR / name / d
            meta_path = src / "zoo.json"
            metrics = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            mv = register_version(registry, name, src, lineage={"source": f"models/zoo/{name}/{d}"}, metrics=metrics)
            versions[d] = mv.version
        set_alias(registry, name, "production", versions[production], reason="zoo seed")
        registered[name] = sorted(versions.values())
        log.info("seeded %s into %s: %s", name, registry, versions)
    return registered
