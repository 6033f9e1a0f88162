"""Retention: delete run data past its age, by category, and record what was deleted.

The policy is deployment configuration, not part of a run spec: ``GENBATCH_RETENTION`` holds either the
path (local or ``gs://``) of a YAML/JSON file or the YAML itself (``roots`` and ``inputs_days``,
``rejects_days``, ``outputs_days``; a missing key keeps that category forever). :func:`apply` deletes or
strips each expired category per run, so outputs stay readable and ``reconcile`` still passes, and
records what it did under ``<root>/_retention/``.

Policy format and what each category removes: docs/internals.md#genbatchopsretention
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genbatch.errors import SpecError
from genbatch.io import storage
from genbatch.ops.erasure import ERASURE_STAGE, Changes, find_run_dirs, refresh_plan, rel, rewrite_jsonl
from genbatch.run.layout import INPUT_DOCS, RunLayout, is_rejects_part, retention_record
from genbatch.run.records import reject_row_index
from genbatch.run.state import load_run_state

log = logging.getLogger(__name__)

ENV_POLICY = "GENBATCH_RETENTION"
SHARD_ITEM_KEEP = ("id", "row_index", "seed", "est_tokens", "est_cost")
VALIDATION_KEEP = ("run_id", "input", "rows", "rejects_by_rule", "failure")


class RetentionPolicy(BaseModel):
    """How long each category of run data is kept (days; None: forever)."""

    model_config = ConfigDict(extra="forbid")

    roots: list[str] = Field(default_factory=list, description="roots holding runs (output.uri of the specs)")
    inputs_days: float | None = Field(None, gt=0)
    rejects_days: float | None = Field(None, gt=0)
    outputs_days: float | None = Field(None, gt=0)


def load_policy(source: str | None = None) -> RetentionPolicy:
    """The policy from ``source`` or ``$GENBATCH_RETENTION``: a file path/URI, or inline YAML/JSON."""
    raw = source if source is not None else os.environ.get(ENV_POLICY)
    if not raw or not raw.strip():
        raise SpecError(f"no retention policy: set {ENV_POLICY} to a YAML file (local or gs://) or to inline YAML "
                        "such as '{roots: [gs://BUCKET/runs], inputs_days: 30, rejects_days: 30, outputs_days: 365}'")
    text = raw
    looks_like_path = "\n" not in raw and (raw.startswith(("gs://", "/", "./")) or raw.endswith((".yaml", ".yml", ".json")))
    if looks_like_path:
        try:
            text = storage.read_text(raw)
        except FileNotFoundError:
            raise SpecError(f"{ENV_POLICY}={raw!r}: no such policy file; fix the path") from None
    try:
        data = yaml.safe_load(text)
        return RetentionPolicy.model_validate(data if data is not None else {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise SpecError(f"{ENV_POLICY}: invalid retention policy: {exc}") from None


def _when(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _expired(since: dt.datetime | None, days: float | None, now: dt.datetime) -> bool:
    return since is not None and days is not None and now - since > dt.timedelta(days=days)


def _bytes(uris: list[str]) -> int:
    return sum(storage.size(u) for u in uris if storage.exists(u))


def _delete_run(layout: RunLayout) -> dict[str, Any]:
    uris = storage.list_uris(layout.root)
    first = [u for u in (layout.success, layout.manifest) if u in uris]
    rest = [u for u in uris if u not in first and u != layout.spec]
    ordered = first + rest + ([layout.spec] if layout.spec in uris else [])
    size = _bytes(ordered)
    for uri in ordered:
        storage.delete(uri)
    storage.remove_empty_dirs(layout.root)
    return {"category": "outputs", "action": "run_deleted", "objects_deleted": len(ordered), "bytes_deleted": size}


def _strip_inputs(layout: RunLayout, num_shards: int, now: dt.datetime, changes: Changes) -> None:
    for name in INPUT_DOCS:
        uri = layout.path(name)
        if storage.exists(uri):
            storage.delete(uri)
            changes.deleted.add(name)
    for shard in range(num_shards):
        rewrite_jsonl(layout, layout.shard_input(shard, num_shards),
                      lambda item: {k: item[k] for k in SHARD_ITEM_KEEP if k in item}, changes)
    rewrite_jsonl(layout, layout.shard_fanout, lambda r: r, changes)
    refresh_plan(load_run_state(layout.root), {}, changes)
    report = storage.read_json(layout.validation_report)
    stripped = {k: report[k] for k in VALIDATION_KEEP if k in report}
    stripped["retention"] = {**(report.get("retention") or {}), "inputs_stripped_at": now.isoformat()}
    storage.write_json(layout.validation_report, stripped, overwrite=True)  # the marker: written last
    changes.rewritten.add(rel(layout, layout.validation_report))


def reject_skeleton(rec: dict[str, Any]) -> dict[str, Any]:
    """An expired reject record: only the accounting (``row_index``, a legacy ``index`` renamed; the rule;
    a tombstone's erasure id), so the run still reconciles."""
    keep = ("rule", "erasure_id") if rec.get("rule") == "erased" else ("rule",)
    return {"row_index": reject_row_index(rec), **{k: rec[k] for k in keep if k in rec}}


def _strip_rejects(layout: RunLayout, now: dt.datetime, changes: Changes) -> None:
    for uri in storage.list_uris(layout.rejects_dir):
        if not is_rejects_part(uri, ERASURE_STAGE):
            rewrite_jsonl(layout, uri, reject_skeleton, changes)
    report = storage.read_json(layout.validation_report)
    report["retention"] = {**(report.get("retention") or {}), "rejects_stripped_at": now.isoformat()}
    storage.write_json(layout.validation_report, report, overwrite=True)
    changes.rewritten.add(rel(layout, layout.validation_report))


def plan_run(run_dir: str, policy: RetentionPolicy, now: dt.datetime) -> list[str]:
    """The categories that are due for one run (empty: nothing to do)."""
    layout = RunLayout(run_dir)
    spec = storage.read_json(layout.spec)
    created = _when(spec.get("created_at"))
    published = _when(storage.read_json(layout.manifest).get("published_at")) if storage.exists(layout.manifest) else None
    if _expired(published or created, policy.outputs_days, now):
        return ["outputs"]
    if not storage.exists(layout.validation_report):
        return []  # never validated: no input or reject copies in the run yet
    marks: dict[str, Any] = storage.read_json(layout.validation_report).get("retention") or {}
    due = []
    if _expired(created, policy.inputs_days, now) and "inputs_stripped_at" not in marks:
        due.append("inputs")
    if _expired(created, policy.rejects_days, now) and "rejects_stripped_at" not in marks:
        due.append("rejects")
    return due


def apply_run(run_dir: str, due: list[str], now: dt.datetime) -> dict[str, Any]:
    """Apply the due categories to one run: delete it whole, or strip inputs/rejects and rewrite its manifest; returns counts."""
    layout = RunLayout(run_dir)
    if due == ["outputs"]:
        return _delete_run(layout)
    from genbatch.stages.publish import rewrite_manifest

    state = load_run_state(run_dir)
    changes = Changes()
    before = {u: storage.size(u) for u in storage.list_uris(layout.root)}
    if "inputs" in due:
        _strip_inputs(layout, state.num_shards, now, changes)
    if "rejects" in due:
        _strip_rejects(layout, now, changes)
    rewrite_manifest(state, notes=[("retention", {"categories": due, "at": now.isoformat()})])
    after = {u: storage.size(u) for u in storage.list_uris(layout.root)}
    freed = sum(before.values()) - sum(after.values())
    return {"category": "+".join(due), "action": "stripped", **changes.to_json(), "bytes_freed": freed}


def apply(root_uri: str, policy: RetentionPolicy, now: dt.datetime | None = None, *,
          dry_run: bool = False) -> dict[str, Any]:
    """Apply the policy to every run under ``root_uri``; write and return the deletion record."""
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    actions = []
    for run_dir in find_run_dirs(root_uri):
        due = plan_run(run_dir, policy, now)
        if not due:
            continue
        run_id = run_dir.rstrip("/").rsplit("/", 1)[-1]
        entry: dict[str, Any] = {"run_id": run_id, "run_dir": run_dir, "due": due}
        if dry_run:
            actions.append(entry)
            continue
        storage.write_json(retention_record(root_uri, stamp, run_id),
                           {**entry, "status": "started", "at": now.isoformat(),
                            "objects": len(storage.list_uris(run_dir))}, overwrite=True)
        entry.update(apply_run(run_dir, due, now))
        log.info("retention: run %s: %s", run_id, entry)
        actions.append(entry)
    record = {"applied_at": now.isoformat(), "root": root_uri, "policy": policy.model_dump(mode="json"),
              "dry_run": dry_run, "runs": actions}
    if not dry_run:
        uri = retention_record(root_uri, stamp)
        storage.write_json(uri, record, overwrite=True)
        record["record_uri"] = uri
    return record
