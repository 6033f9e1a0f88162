"""Erasure of a data subject (GDPR art. 17) across runs, local or ``gs://``: ``genbatch erase``.

    genbatch erase --id ID ROOT_URI...             every row whose ``id`` is ID
    genbatch erase --match FIELD=VALUE ROOT_URI... every row whose FIELD (dotted: attributes.email) is VALUE

Per run: find the subject's rows, account for them with one ``erased`` tombstone reject per row index (so
:func:`genbatch.run.reconcile.reconcile` still passes), rewrite every object that held them, scrub the derived
documents, re-evaluate quality and rewrite ``manifest.json``, then verify that no object still holds the subject.
One erasure record per root (``<root>/_erasures/<erasure_id>.json``) keeps only a salted hash and counts.

The steps, the erasure record and the limits: docs/internals.md#genbatchopserasure
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from genbatch.errors import GenbatchError
from genbatch.io import storage
from genbatch.run.layout import MANIFESTS_DIR, SPEC, RunLayout, erasure_record, is_batch_part, is_record_part, is_rejects_part
from genbatch.run.layout import find_run_dirs as layout_find_run_dirs
from genbatch.run.records import jsonl_bytes, reject_row_index
from genbatch.run.state import RunState, load_run_state
from genbatch.stages import openai_export

log = logging.getLogger(__name__)

ERASED = "[erased]"
RULE_ERASED = "erased"
ERASURE_STAGE = "erasure"
ENV_SALT = "GENBATCH_ERASURE_SALT"
MIN_NEEDLE = 4  # shorter ids/prompts are erased but not byte-searched (they occur everywhere)
_MISSING = object()


class ErasureError(GenbatchError):
    """An erasure request is malformed or could not be completed."""


# --- the subject -----------------------------------------------------------------------------------


def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _equal(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return value == wanted
    if isinstance(value, bool):
        return str(value).lower() == wanted.lower()
    if isinstance(value, (int, float)):
        return json.dumps(value) == wanted
    return False


@dataclass(frozen=True)
class Subject:
    """Who to erase: rows whose ``field`` (dotted path; ``id`` for ``--id``) equals ``value``."""

    field: str
    value: str

    @classmethod
    def parse(cls, *, ident: str | None = None, match: str | None = None) -> Subject:
        """The subject from the CLI's ``--id ID`` or ``--match FIELD=VALUE`` (exactly one); ErasureError when malformed."""
        if (ident is None) == (match is None):
            raise ErasureError("give exactly one of --id ID or --match FIELD=VALUE")
        if ident is not None:
            if not ident:
                raise ErasureError("--id needs a non-empty id")
            return cls("id", ident)
        assert match is not None
        name, sep, value = match.partition("=")
        if not sep or not name.strip() or not value:
            raise ErasureError(f"--match wants FIELD=VALUE (e.g. email=jane@example.org), got {match!r}")
        return cls(name.strip(), value)

    def matches_row(self, row: Any) -> bool:
        """An input row (parsed), or the raw text of a row the validator could not parse."""
        if isinstance(row, dict):
            return _equal(_get(row, self.field), self.value)
        if isinstance(row, str):
            if self.field == "id":
                return self.value in row
            return self.value in row and f'"{self.field.rsplit(".", 1)[-1]}"' in row
        return False

    def matches_output(self, record: dict[str, Any]) -> bool:
        """An output or error record: its id, or the field in the row's passthrough metadata."""
        if self.field == "id":
            return _equal(record.get("id"), self.value)
        return _equal(_get(record.get("metadata") or {}, self.field), self.value)

    def hashed(self, salt: bytes) -> str:
        """Salted sha256 of field and value: what the erasure record keeps instead of the personal data."""
        return hashlib.sha256(salt + b"\0" + self.field.encode() + b"\0" + self.value.encode()).hexdigest()


# --- rewriting a run in place (shared with genbatch.ops.retention) -------------------------------------


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """Every record of a JSONL object, blank lines skipped."""
    return [json.loads(line) for line in storage.iter_lines(uri) if line.strip()]


def rel(layout: RunLayout, uri: str) -> str:
    """``uri`` relative to the run root: how changed, deleted and residual objects are named in records."""
    return uri[len(layout.root):].lstrip("/")


@dataclass
class Changes:
    """What a rewrite did to a run (object counts only: safe to record)."""

    rewritten: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, int]:
        """Counts of objects rewritten (and not deleted afterwards) and deleted, for the erasure or retention record."""
        return {"objects_rewritten": len(self.rewritten - self.deleted), "objects_deleted": len(self.deleted)}


def rewrite_jsonl(layout: RunLayout, uri: str, keep: Callable[[dict[str, Any]], dict[str, Any] | None],
                  changes: Changes, *, delete_if_empty: bool = False) -> list[dict[str, Any]]:
    """Rewrite a JSONL object with ``keep(record)`` (None drops it); returns the dropped records."""
    if not storage.exists(uri):
        return []
    records = read_jsonl(uri)
    kept, dropped = [], []
    for rec in records:
        new = keep(rec)
        if new is None:
            dropped.append(rec)
        else:
            kept.append(new)
    if kept == records:
        return dropped
    if not kept and delete_if_empty:
        storage.delete(uri)
        changes.deleted.add(rel(layout, uri))
    else:
        storage.write_bytes(uri, jsonl_bytes(kept), overwrite=True)
        changes.rewritten.add(rel(layout, uri))
    return dropped


def refresh_shard_manifests(state: RunState, changes: Changes) -> None:
    """Each committed shard manifest's ``parts`` (path, records, sha256), ``generated`` and ``errored``
    from the objects as they are now (the worker's own summary, recomputed)."""
    layout = state.layout
    for shard in range(state.num_shards):
        uri = layout.shard_manifest(shard)
        if not storage.exists(uri):
            continue
        manifest = storage.read_json(uri)
        parts = []
        for part in storage.list_uris(layout.outputs_dir(shard)):
            if is_batch_part(part):
                data = storage.read_bytes(part)
                parts.append({"path": rel(layout, part), "records": data.count(b"\n"),
                              "sha256": hashlib.sha256(data).hexdigest()})
        errors = layout.errors_file(shard)
        errored = len(read_jsonl(errors)) if storage.exists(errors) else 0
        new = {**manifest, "parts": parts, "generated": sum(p["records"] for p in parts), "errored": errored}
        if new != manifest:
            storage.write_json(uri, new, overwrite=True)
            changes.rewritten.add(rel(layout, uri))


def refresh_plan(state: RunState, removed_cost: dict[int, float], changes: Changes, *,
                 erased_accepted: int = 0, erased_preprocess_rejects: int = 0) -> None:
    """``shards/_plan.json`` after shard files were rewritten: per-shard items, bytes, sha256, cost."""
    layout = state.layout
    if not storage.exists(layout.shard_plan):
        return
    plan = storage.read_json(layout.shard_plan)
    shards = []
    for entry in plan.get("shards", []):
        shard = int(entry["shard"])
        uri = layout.shard_input(shard, state.num_shards)
        data = storage.read_bytes(uri) if storage.exists(uri) else b""
        shards.append({**entry, "items": data.count(b"\n"), "bytes": len(data),
                       "sha256": hashlib.sha256(data).hexdigest(),
                       "est_cost": entry.get("est_cost", 0.0) - removed_cost.get(shard, 0.0)})
    removed_items = sum(e["items"] for e in plan.get("shards", [])) - sum(e["items"] for e in shards)
    new = {**plan, "shards": shards, "items": sum(e["items"] for e in shards),
           "est_cost_total": plan.get("est_cost_total", 0.0) - sum(removed_cost.values())}
    if "rows" in plan and (removed_items or erased_accepted or erased_preprocess_rejects):
        rows = dict(plan["rows"])
        rows["sharded"] = rows.get("sharded", 0) - removed_items
        rows["accepted"] = rows.get("accepted", 0) - erased_accepted
        rows["rejected"] = rows.get("rejected", 0) - erased_preprocess_rejects
        rows["erased"] = rows.get("erased", 0) + erased_accepted
        new["rows"] = rows
    if new != plan:
        storage.write_json(layout.shard_plan, new, overwrite=True)
        changes.rewritten.add(rel(layout, layout.shard_plan))


# --- needles: what must be gone afterwards ----------------------------------------------------------


def _variants(needle: str) -> set[bytes]:
    """The byte forms a string takes in our objects: raw, JSON-escaped (ASCII or not), HTML-escaped."""
    forms = {needle, json.dumps(needle)[1:-1], json.dumps(needle, ensure_ascii=False)[1:-1],
             html.escape(needle), html.escape(needle, quote=False), html.escape(json.dumps(needle)[1:-1])}
    return {f.encode("utf-8", "surrogatepass") for f in forms if f}


@dataclass
class Needles:
    """The subject's ids and prompts: the strings searched for, and scrubbed, in a run's objects."""

    ids: set[str] = field(default_factory=set)
    prompts: set[str] = field(default_factory=set)

    def add_row(self, row: Any) -> None:
        """Collect the id, prompt and negative_prompt of a parsed row (raw, unparsed rows add nothing)."""
        if isinstance(row, dict):
            for key in ("prompt", "negative_prompt"):
                if isinstance(row.get(key), str):
                    self.prompts.add(row[key])
            if isinstance(row.get("id"), str):
                self.ids.add(row["id"])

    def searchable(self) -> dict[str, set[bytes]]:
        """kind -> byte forms, for the strings long enough to search for."""
        out: dict[str, set[bytes]] = {"id": set(), "prompt": set()}
        for kind, values in (("id", self.ids), ("prompt", self.prompts)):
            for v in values:
                if len(v.strip()) >= MIN_NEEDLE:
                    out[kind] |= _variants(v)
                    out[kind] |= _variants(v.strip())
        return out

    def strings(self) -> list[str]:
        """The ids and prompts (also stripped) long enough to search for, longest first, for scrubbing JSON strings."""
        return sorted({v for v in self.ids | self.prompts | {p.strip() for p in self.prompts} if len(v.strip()) >= MIN_NEEDLE},
                      key=len, reverse=True)


def _scrub_value(value: Any, needles: Sequence[str]) -> Any:
    if isinstance(value, str):
        return ERASED if any(n in value for n in needles) else value
    if isinstance(value, list):
        return [_scrub_value(v, needles) for v in value]
    if isinstance(value, dict):
        return {k: _scrub_value(v, needles) for k, v in value.items()}
    return value


def scrub_document(layout: RunLayout, uri: str, needles: Needles, changes: Changes) -> None:
    """A derived JSON/HTML document that mentions the subject: strings blanked (JSON) or text replaced
    (HTML); deleted when the subject is still in it afterwards (or it is of another kind)."""
    data = storage.read_bytes(uri)
    forms = needles.searchable()
    if not any(f in data for fs in forms.values() for f in fs):
        return
    name = rel(layout, uri)
    if name.endswith(".json"):
        doc = json.loads(data)
        storage.write_json(uri, _scrub_value(doc, needles.strings()), overwrite=True)
    elif name.endswith(".html"):
        text = data
        for form in sorted((f for fs in forms.values() for f in fs), key=len, reverse=True):
            text = text.replace(form, ERASED.encode())
        storage.write_bytes(uri, text, overwrite=True, content_type="text/html; charset=utf-8")
    if name.endswith((".json", ".html")):
        changes.rewritten.add(name)
        data = storage.read_bytes(uri)
        if not any(f in data for fs in forms.values() for f in fs):
            return
    storage.delete(uri)
    changes.deleted.add(name)


def residuals(layout: RunLayout, needles: Needles) -> dict[str, list[str]]:
    """Objects of the run that still contain the subject's id or prompt: kind -> run-relative paths."""
    forms = needles.searchable()
    found: dict[str, list[str]] = {"id": [], "prompt": []}
    for uri in storage.list_uris(layout.root):
        data = storage.read_bytes(uri)
        name = rel(layout, uri)
        for kind, fs in forms.items():
            if any(f in data for f in fs) or (kind == "id" and any(f"/{i}.png" in name for i in needles.ids)):
                found[kind].append(name)
    return found


# --- one run ---------------------------------------------------------------------------------------


@dataclass
class Hits:
    """What :func:`find` found of the subject in one run: its row indexes, its ids and the strings to verify against."""

    indexes: set[int] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    needles: Needles = field(default_factory=Needles)

    def add(self, index: Any, ident: Any, row: Any = None) -> None:
        """Record one row of the subject: its index (an int, not a bool), its id and its id/prompt strings."""
        if isinstance(index, int) and not isinstance(index, bool):
            self.indexes.add(index)
        if isinstance(ident, str):
            self.ids.add(ident)
            self.needles.ids.add(ident)
        self.needles.add_row(row)

    def hit(self, index: Any, ident: Any) -> bool:
        """Whether a record belongs to the subject, by row index or by id."""
        return (isinstance(index, int) and index in self.indexes) or (isinstance(ident, str) and ident in self.ids)


def _shard_files(layout: RunLayout, shard: int) -> list[str]:
    return storage.list_uris(layout.outputs_dir(shard))


def _tombstoned(layout: RunLayout) -> tuple[set[int], list[str]]:
    """Row indexes already erased, and the erasure ids recorded in the run's tombstone parts."""
    indexes: set[int] = set()
    ids: list[str] = []
    for uri in storage.list_uris(layout.rejects_dir):
        if is_rejects_part(uri, ERASURE_STAGE):
            for rec in read_jsonl(uri):
                indexes.add(reject_row_index(rec))
                if rec.get("erasure_id") not in ids:
                    ids.append(str(rec.get("erasure_id")))
    return indexes, ids


def find(state: RunState, subject: Subject) -> Hits:
    """Step 1: every row index and id of the subject in the run, and the strings to search for after."""
    layout = state.layout
    hits = Hits()
    if subject.field == "id":
        hits.needles.ids.add(subject.value)
    if storage.exists(layout.validation_accepted):
        for rec in read_jsonl(layout.validation_accepted):
            if subject.matches_row(rec.get("row")):
                hits.add(rec.get("index"), (rec.get("row") or {}).get("id"), rec.get("row"))
    for shard in range(state.num_shards):
        uri = layout.shard_input(shard, state.num_shards)
        if storage.exists(uri):
            for item in read_jsonl(uri):
                if subject.matches_row(item):
                    hits.add(item.get("row_index"), item.get("id"), item)
    for uri in storage.list_uris(layout.rejects_dir):
        for rec in read_jsonl(uri):
            if subject.matches_row(rec.get("row")) or (subject.field == "id" and _equal(rec.get("id"), subject.value)):
                hits.add(reject_row_index(rec), rec.get("id"), rec.get("row"))
    for shard in range(state.num_shards):
        sources = [u for u in _shard_files(layout, shard) if u.endswith(".jsonl")]
        if storage.exists(layout.errors_file(shard)):
            sources.append(layout.errors_file(shard))
        for uri in sources:
            for rec in read_jsonl(uri):
                if subject.matches_output(rec):
                    hits.add(rec.get("row_index"), rec.get("id"))
    # Second pass by what the first found: rows found only through their outputs (or the reverse).
    if storage.exists(layout.validation_accepted):
        for rec in read_jsonl(layout.validation_accepted):
            row = rec.get("row") or {}
            if hits.hit(rec.get("index"), row.get("id") if isinstance(row, dict) else None):
                hits.add(rec.get("index"), row.get("id") if isinstance(row, dict) else None, row)
    for shard in range(state.num_shards):
        uri = layout.shard_input(shard, state.num_shards)
        if storage.exists(uri):
            for item in read_jsonl(uri):
                if hits.hit(item.get("row_index"), item.get("id")):
                    hits.add(item.get("row_index"), item.get("id"), item)
    for uri in storage.list_uris(layout.rejects_dir):  # e.g. a later row with the subject's id (duplicate_id)
        for rec in read_jsonl(uri):
            if rec.get("rule") != RULE_ERASED and hits.hit(reject_row_index(rec), rec.get("id")):
                hits.add(reject_row_index(rec), rec.get("id"), rec.get("row"))
    return hits


def _incomplete(state: RunState) -> bool:
    """A run that may still be generating: prepared shards, not published, a shard not committed."""
    layout = state.layout
    if storage.exists(layout.success) or not storage.exists(layout.shard_plan):
        return False
    return any(not storage.exists(layout.shard_manifest(s)) for s in range(state.num_shards))


def _rewrite(state: RunState, hits: Hits, changes: Changes) -> dict[str, int]:
    """Step 3: drop the subject from every record set of the run."""
    layout = state.layout

    def keep_row(rec: dict[str, Any]) -> dict[str, Any] | None:
        row = rec.get("row")
        return None if hits.hit(rec.get("index"), row.get("id") if isinstance(row, dict) else None) else rec

    erased_accepted = len(rewrite_jsonl(layout, layout.validation_accepted, keep_row, changes))
    removed_cost: dict[int, float] = {}
    for shard in range(state.num_shards):
        dropped = rewrite_jsonl(layout, layout.shard_input(shard, state.num_shards),
                                lambda it: None if hits.hit(it.get("row_index"), it.get("id")) else it, changes)
        if dropped:
            removed_cost[shard] = sum(float(it.get("est_cost") or 0.0) for it in dropped)
    rewrite_jsonl(layout, layout.shard_fanout,
                  lambda r: None if hits.hit(r.get("row_index"), r.get("id")) or r.get("canonical_id") in hits.ids else r,
                  changes)
    preprocess_rejects = 0
    for uri in storage.list_uris(layout.rejects_dir):
        if is_rejects_part(uri, ERASURE_STAGE):
            continue
        dropped = rewrite_jsonl(layout, uri, lambda r: None if hits.hit(reject_row_index(r), r.get("id")) else r, changes)
        if is_rejects_part(uri, "preprocess"):
            preprocess_rejects += len(dropped)
    images = 0
    for shard in range(state.num_shards):
        for uri in _shard_files(layout, shard):
            if is_record_part(uri):
                for rec in rewrite_jsonl(layout, uri, lambda r: None if hits.hit(r.get("row_index"), r.get("id")) else r,
                                         changes, delete_if_empty=True):
                    if rec.get("image_path"):
                        image = layout.path(str(rec["image_path"]))
                        storage.delete(image)
                        changes.deleted.add(rel(layout, image))
                        images += 1
        for ident in hits.ids:  # an image written by an attempt that never committed its part
            try:
                image = layout.image_path(shard, ident)
            except Exception:  # noqa: BLE001 - an id that cannot name an object never had an image
                continue
            if storage.exists(image):
                storage.delete(image)
                changes.deleted.add(rel(layout, image))
                images += 1
        rewrite_jsonl(layout, layout.errors_file(shard),
                      lambda r: None if hits.hit(r.get("row_index"), r.get("id")) else r, changes)
    for view in (openai_export.OUTPUT, openai_export.ERRORS):  # output.format openai_batch: lines by custom_id
        rewrite_jsonl(layout, layout.path(view), lambda r: None if r.get("custom_id") in hits.ids else r, changes)
    refresh_shard_manifests(state, changes)
    refresh_plan(state, removed_cost, changes, erased_accepted=erased_accepted,
                 erased_preprocess_rejects=preprocess_rejects)
    return {"images_deleted": images}


def _reevaluate(state: RunState, hits: Hits, changes: Changes) -> bool | None:
    """Step 5 (quality): metrics, summary, Data Docs and report.html again, without the subject."""
    layout = state.layout
    if not storage.exists(layout.quality_summary):
        return None
    from genbatch.stages.quality import evaluate

    try:
        summary = evaluate(state)
    except Exception as exc:  # noqa: BLE001 - fall back to scrubbing; the record says so
        log.warning("run %s: quality re-evaluation after erasure failed (%s); scrubbing instead", state.run_id, exc)
        for uri in storage.list_uris(layout.quality_dir) + [layout.report_html]:
            if storage.exists(uri) and not uri.endswith(".parquet"):
                scrub_document(layout, uri, hits.needles, changes)
        if storage.exists(layout.quality_metrics):
            storage.delete(layout.quality_metrics)
            changes.deleted.add(rel(layout, layout.quality_metrics))
        return None
    for uri in storage.list_uris(layout.quality_dir) + [layout.report_html]:
        if storage.exists(uri):
            changes.rewritten.add(rel(layout, uri))
    return bool(summary["passed"])


def erase_run(run_dir: str, subject: Subject, erasure_id: str, *, now: dt.datetime,
              include_incomplete: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Steps 1-6 for one run; returns its (count-only) part of the erasure record."""
    from genbatch.stages.publish import rewrite_manifest

    state = load_run_state(run_dir)
    layout = state.layout
    out: dict[str, Any] = {"run_id": state.run_id, "run_dir": layout.root}
    hits = find(state, subject)
    already, recorded = _tombstoned(layout)
    new_rows = sorted(hits.indexes - already)
    out.update(rows_erased=len(new_rows), ids_erased=len(hits.ids))
    manifest = storage.read_json(layout.manifest) if storage.exists(layout.manifest) else None
    in_manifest = {e.get("erasure_id") for e in (manifest or {}).get("erasures") or []}
    unfinished = [e for e in recorded if e not in in_manifest] if manifest is not None else []
    if not hits.indexes and not hits.ids and not unfinished:
        return {**out, "status": "no_match"}
    if _incomplete(state) and not include_incomplete:
        return {**out, "status": "skipped_incomplete"}
    if dry_run:
        return {**out, "status": "dry_run"}
    changes = Changes()
    # 2. Tombstones first: a crash after this leaves rows in two places, which the next erase finishes.
    if new_rows:
        part = sum(1 for u in storage.list_uris(layout.rejects_dir)
                   if is_rejects_part(u, ERASURE_STAGE))
        uri = layout.rejects_part(ERASURE_STAGE, part)
        storage.write_bytes(uri, jsonl_bytes({"row_index": i, "rule": RULE_ERASED, "erasure_id": erasure_id,
                                         "reason": f"erased at the data subject's request ({erasure_id})"}
                                        for i in new_rows))
        changes.rewritten.add(rel(layout, uri))
    # 3. The record sets; 4. the derived documents outside quality/.
    out.update(_rewrite(state, hits, changes))
    for uri in storage.list_uris(layout.validation_dir):
        scrub_document(layout, uri, hits.needles, changes)
    # 5. manifest.json consistent before quality re-reads the run, quality again, manifest again (with a
    #    note for this erasure and for any earlier one that stopped before recording itself).
    notes: list[tuple[str, dict[str, Any]]] = [
        ("erasures", {"erasure_id": e, "completed_at": now.isoformat()}) for e in unfinished if e != erasure_id]
    if new_rows or hits.ids:
        notes.append(("erasures", {"erasure_id": erasure_id, "rows": len(new_rows), "at": now.isoformat()}))
    rewrite_manifest(state)
    out["quality_passed"] = _reevaluate(state, hits, changes)
    if out["quality_passed"] is None and storage.exists(layout.report_html):
        scrub_document(layout, layout.report_html, hits.needles, changes)
    rewrite_manifest(state, notes=notes, new_generation=False)
    # The kept manifest generations name the subject's images (paths hold item ids): scrubbed like any document.
    for uri in storage.list_uris(layout.path(MANIFESTS_DIR)):
        scrub_document(layout, uri, hits.needles, changes)
    if not hits.indexes and not hits.ids:
        out["status"] = "completed_earlier_erasure"
        return out
    # 6. Verify.
    left = residuals(layout, hits.needles)
    out.update(changes.to_json())
    out["residual_objects"] = {k: len(v) for k, v in left.items()}
    if any(left.values()):  # counts only: the object names themselves may carry the id
        log.warning("run %s: after erasure %s objects still contain the subject's id and %s its prompt; byte-search "
                    "%s for them (a prompt may also be another subject's identical prompt)",
                    state.run_id, len(left["id"]), len(left["prompt"]), layout.root)
    out["status"] = "erased" if not left["id"] else "residual"
    out["source_input"] = state.spec.input.uri
    return out


# --- across roots ----------------------------------------------------------------------------------


def find_run_dirs(root: str) -> list[str]:
    """Run dirs (``spec.json`` directly below) under a root; the root itself when it is a run dir."""
    return layout_find_run_dirs(root, SPEC, depth=1, skip_hidden=True)


def _salt() -> tuple[bytes, str]:
    configured = os.environ.get(ENV_SALT)
    if configured:
        return configured.encode(), ENV_SALT
    return secrets.token_bytes(16), "ephemeral (GENBATCH_ERASURE_SALT unset: the hash cannot be matched later)"


def erase(roots: Sequence[str], subject: Subject, *, now: dt.datetime | None = None, include_incomplete: bool = False,
          dry_run: bool = False) -> dict[str, Any]:
    """Erase the subject from every run under ``roots``; write and return the erasure record."""
    now = now or dt.datetime.now(dt.UTC)
    erasure_id = f"er-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"
    salt, salt_source = _salt()
    runs: list[dict[str, Any]] = []
    for root in roots:
        for run_dir in find_run_dirs(root):
            runs.append(erase_run(run_dir, subject, erasure_id, now=now, include_incomplete=include_incomplete,
                                  dry_run=dry_run))
    touched = [r for r in runs if r["status"] != "no_match"]
    record = {
        "erasure_id": erasure_id,
        "requested_at": now.isoformat(),
        "dry_run": dry_run,
        "subject": {"field": subject.field, "value_sha256": subject.hashed(salt), "salt": salt_source},
        "roots": list(roots),
        "runs_searched": len(runs),
        "runs": [{k: v for k, v in r.items() if k != "source_input"} for r in touched],
        "rows_erased": sum(r["rows_erased"] for r in touched),
        "skipped_incomplete": [r["run_id"] for r in touched if r["status"] == "skipped_incomplete"],
        "residual_runs": [r["run_id"] for r in touched if r["status"] == "residual"],
        "source_inputs_not_modified": sorted({r["source_input"] for r in touched if r.get("source_input")}),
    }
    if not dry_run:
        for root in roots:
            uri = erasure_record(root, erasure_id)
            storage.write_json(uri, record)
            record.setdefault("record_uris", []).append(uri)
    return record
