"""The model registry (DESIGN.md §3): immutable versions, a card of checksums, atomic aliases.

Layout under a registry URI (local or gs://)::

    <model>/versions/<n>/...        immutable files + card.json (written last: the commit point)
    <model>/aliases.json            {"production": 2, ...}, changed by compare-and-swap
    <model>/audit/<ts>-<event>.json one create-only object per registration, promotion, rollback or
                                    rejection: append-only on GCS too, where appending to one object
                                    would be a read-modify-write race
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path
from typing import Any

from genbatch.errors import GenbatchError, ModelIntegrityError, SpecError
from genbatch.io import storage
from genbatch.io.storage import sha256_file
from genbatch.run.model_ref import CARD, ModelVersion, card_uri

log = logging.getLogger(__name__)

REFUSED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")



def refuse_pickle(rel_path: str) -> None:
    """Pickle-format weights can execute code on load: refuse them before reading a byte."""
    if rel_path.endswith(REFUSED_SUFFIXES):
        raise ModelIntegrityError(
            f"refused model file {rel_path!r}: pickle-format weights are not accepted; "
            "re-save the model with save_pretrained(..., safe_serialization=True)"
        )


def model_root(registry: str, name: str) -> str:
    return storage.join(registry, name)


def version_uri(registry: str, name: str, version: int) -> str:
    return storage.join(registry, name, "versions", str(version))


def list_versions(registry: str, name: str) -> list[int]:
    """Committed versions only (those whose card.json exists)."""
    prefix = storage.join(registry, name, "versions")
    versions = set()
    for uri in storage.list_uris(prefix):
        rel = uri[len(prefix) :].strip("/").split("/")
        if len(rel) == 2 and rel[1] == CARD and rel[0].isdigit():
            versions.add(int(rel[0]))
    return sorted(versions)


def read_aliases(registry: str, name: str) -> dict[str, int]:
    uri = storage.join(model_root(registry, name), "aliases.json")
    return dict(storage.read_json(uri)) if storage.exists(uri) else {}


def read_card(mv: ModelVersion) -> dict[str, Any]:
    """The version's card; ModelIntegrityError when it is missing (the version was never committed)."""
    uri = card_uri(mv.uri)
    if not storage.exists(uri):
        raise ModelIntegrityError(f"{mv.ref}: {uri} is missing; the version was never committed")
    card: dict[str, Any] = storage.read_json(uri)
    return card


def audit(registry: str, name: str, event: str, details: dict[str, Any]) -> None:
    """Append-only audit trail: one create-only object per event."""
    now = dt.datetime.now(dt.UTC)
    record = {"at": now.isoformat(), "event": event, "model": name, **details}
    key = f"{now.strftime('%Y%m%dT%H%M%S%f')}-{event}-{uuid.uuid4().hex[:8]}.json"
    storage.write_json(storage.join(model_root(registry, name), "audit", key), record)


def register_version(
    registry: str,
    name: str,
    src_dir: Path,
    *,
    lineage: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Copy a saved model directory into the registry as the next version; card.json last."""
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    if not files:
        raise ModelIntegrityError(f"cannot register {name}: {src_dir} holds no files (is the path right?)")
    for path in files:
        refuse_pickle(path.name)
    existing = list_versions(registry, name)
    version = (existing[-1] + 1) if existing else 1
    mv = ModelVersion(name, version, version_uri(registry, name, version))
    checksums: dict[str, str] = {}
    for path in files:
        rel = path.relative_to(src_dir).as_posix()
        checksums[rel] = sha256_file(path)
        storage.upload_file(path, storage.join(mv.uri, rel))
    card = {
        "name": name,
        "version": version,
        "files": checksums,
        "lineage": lineage or {},
        "metrics": metrics or {},
        "registered_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    storage.write_json(storage.join(mv.uri, CARD), card)
    audit(registry, name, "register", {"version": version, "lineage": lineage or {}})
    log.info("registered %s from %s", mv.ref, src_dir)
    return mv


class AliasConflictError(GenbatchError):
    """An alias changed under us: a concurrent promotion won the compare-and-swap."""


UNCHECKED: Any = object()  # "do not check the current value"


def aliases_uri(registry: str, name: str) -> str:
    return storage.join(model_root(registry, name), "aliases.json")


def update_aliases(
    registry: str,
    name: str,
    changes: dict[str, int | None],
    *,
    expect: dict[str, int | None] | None = None,
    event: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Apply alias changes in one compare-and-swap; ``expect`` guards against concurrent writers.

    A ``None`` change removes the alias. If any alias in ``expect`` no longer has the expected
    value when the swap happens, nothing is written and AliasConflictError names the winner.
    """
    committed = list_versions(registry, name)
    for alias, version in changes.items():
        if version is not None and version not in committed:
            raise SpecError(f"cannot point {name}:{alias} at version {version}: committed versions are {committed}")
    before: dict[str, Any] = {}

    def update(current: Any) -> dict[str, Any]:
        cur = dict(current or {})
        for alias, expected in (expect or {}).items():
            if cur.get(alias) != expected:
                raise AliasConflictError(
                    f"{name}:{alias} is {cur.get(alias)} but this change expected {expected}: another promotion "
                    "or rollback won the race; re-read the aliases (genbatch model list) and retry if still wanted"
                )
        before.clear()
        before.update(cur)
        new = {k: v for k, v in cur.items() if k not in changes}
        new.update({k: v for k, v in changes.items() if v is not None})
        return new

    after: dict[str, int] = storage.compare_and_swap_json(aliases_uri(registry, name), update)
    audit(registry, name, event, {"changes": changes, "before": before, "after": after, "reason": reason,
                                  "evidence": evidence or {}})
    return after


def set_alias(registry: str, name: str, alias: str, version: int, *, reason: str,
              expect: Any = UNCHECKED) -> dict[str, int]:
    """Point one alias at a version atomically; with ``expect``, only if it still has that value."""
    guard = None if expect is UNCHECKED else {alias: expect}
    return update_aliases(registry, name, {alias: version}, expect=guard, event="alias", reason=reason)


def promote(registry: str, name: str, version: int, *, reason: str, evidence: dict[str, Any] | None = None,
            expect_production: Any = UNCHECKED) -> dict[str, int]:
    """Blue-green: production -> ``version``, the old production kept as ``previous`` for rollback."""
    current = read_aliases(registry, name).get("production") if expect_production is UNCHECKED else expect_production
    if current == version:
        raise SpecError(f"{name}@{version} is already production")
    return update_aliases(registry, name, {"production": version, "previous": current},
                          expect={"production": current}, event="promote", reason=reason, evidence=evidence)


def rollback(registry: str, name: str, *, reason: str) -> dict[str, int]:
    """Production back to ``previous`` in one swap; the rolled-back version stays registered."""
    aliases = read_aliases(registry, name)
    if "previous" not in aliases:
        raise SpecError(f"{name} has no 'previous' alias to roll back to (aliases: {aliases})")
    return update_aliases(registry, name, {"production": aliases["previous"], "previous": None,
                                           "rolled_back": aliases.get("production")},
                          expect={"production": aliases.get("production"), "previous": aliases["previous"]},
                          event="rollback", reason=reason)


def read_audit(registry: str, name: str) -> list[dict[str, Any]]:
    """The audit trail, oldest first (object names start with a UTC timestamp)."""
    prefix = storage.join(model_root(registry, name), "audit")
    return [dict(storage.read_json(uri)) for uri in storage.list_uris(prefix) if uri.endswith(".json")]


def resolve(registry: str, name: str, *, alias: str | None = None, version: int | None = None) -> ModelVersion:
    """Pin an alias or version to an immutable, committed version."""
    versions = list_versions(registry, name)
    if not versions:
        raise SpecError(f"model {name!r} has no versions in registry {registry!r}; register one first")
    if alias is not None:
        aliases = read_aliases(registry, name)
        if alias not in aliases:
            raise SpecError(
                f"model {name!r} has no alias {alias!r}; known aliases: {sorted(aliases) or 'none'}"
            )
        version = int(aliases[alias])
    if version not in versions:
        raise SpecError(f"model {name!r} has no version {version}; committed versions: {versions}")
    return ModelVersion(name, version, version_uri(registry, name, version))


def fetch_verified(mv: ModelVersion, cache_dir: Path) -> Path:
    """Give a local directory with every file of the version, each checked against card.json.

    Runs before any weights are deserialised or any device memory is allocated, so a
    truncated, altered or pickle file fails here, naming the file.
    """
    card = read_card(mv)
    files: dict[str, str] = card.get("files", {})
    if not files:
        raise ModelIntegrityError(f"{mv.ref}: card.json lists no files")
    for rel in files:
        refuse_pickle(rel)
    if storage.is_gcs(mv.uri):
        local = cache_dir / mv.name / str(mv.version)
        for rel in files:
            target = local / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                storage.download_file(storage.join(mv.uri, rel), target)
    else:
        local = storage.local_path(mv.uri)
    for entry in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = entry.relative_to(local).as_posix()
        if rel != CARD and rel not in files:
            refuse_pickle(rel)
    for rel, expected in files.items():
        path = local / rel
        if not path.is_file():
            raise ModelIntegrityError(f"{mv.ref}: file {rel} listed in card.json is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"{mv.ref}: file {rel} has sha256 {actual[:12]}…, card.json says {expected[:12]}…; "
                "the file is truncated or altered: re-register the version from a good copy"
            )
    return local


def resolve_for_spec(spec: Any) -> ModelVersion:
    """The resolver the prepare stage is handed: the spec's alias or version, pinned."""
    return resolve(spec.model.registry, spec.model.name, alias=spec.model.alias, version=spec.model.version)
