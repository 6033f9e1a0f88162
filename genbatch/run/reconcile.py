"""reconcile(run_dir): the figures that prove nothing was lost and nothing doubled.

Counts must satisfy ``input = accepted + rejected`` and ``accepted = generated + errored``;
every input row index appears exactly once across accepted items and rejects, and every
accepted id exactly once across outputs and errors. Beyond the counts it checks what an operator
needs after an incident (``genbatch reconcile URI``): orphan objects, every manifest against the
objects, consumer partial reads, work redone and, optionally, secret leaks.

The checks beyond the counts: docs/internals.md#genbatchrunreconcile
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genbatch.io import storage
from genbatch.run.contract import success_problem
from genbatch.run.damage import damaged_files
from genbatch.run.layout import (
    ATTEMPT_RECORD_RE,
    ATTEMPTS_DIR,
    ERRORS_FILE_RE,
    FAILED,
    IN_SHARD_RE,
    MANIFEST,
    MANIFESTS_PREFIX,
    OPERATOR_DIRS,
    REJECTS_PART_PREFIX,
    ROOT_FILES,
    SHARD_FANOUT,
    SHARD_FILE_RE,
    SHARD_INPUT_RE,
    SHARD_PLAN,
    STAGE_DIRS,
    SUCCESS,
    RunLayout,
    listed_in_manifest,
)
from genbatch.run.records import iter_jsonl, iter_many, reject_files, reject_row_index
from genbatch.run.state import RunRef, RunState, as_run_state

CORE_COUNTS = ("input", "accepted", "rejected", "generated", "errored", "items_lost", "items_duplicated")
"""The count fields ``manifest.json`` records and that must agree with the objects."""

_MAX_LISTED = 5


@dataclass
class Reconciliation:
    """What :func:`reconcile` found: the core counts, the problems, and the incident checks' figures."""

    input: int
    accepted: int
    rejected: int
    generated: int
    errored: int
    items_lost: int
    items_duplicated: int
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    consumer_partial_reads: int = 0
    published: bool = False
    checks: dict[str, int] = field(default_factory=dict)
    work_redone: int | None = None
    max_work_redone: int | None = None
    attempts: dict[str, Any] | None = None
    work_redone_probe: int | None = None
    max_work_redone_probe: int | None = None
    secret_leak_count: int | None = None
    damaged: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """The core counts only (what ``manifest.json`` records)."""
        return {k: int(getattr(self, k)) for k in CORE_COUNTS}

    def to_json(self) -> dict[str, Any]:
        """Every field plus ``ok``, as ``genbatch reconcile`` prints it."""
        return {**asdict(self), "ok": self.ok}


@dataclass
class _Part:
    """One JSONL object of a shard's outputs dir, read once."""

    rel: str
    shard: int
    kind: str  # "part" or "errors"
    records: int
    sha256: str
    bytes: int
    ids: list[str]


def reconcile(run: RunRef, *, attempt_log: str | Path | None = None, secrets: Sequence[str] = (),
              check_consumer: bool = True) -> Reconciliation:
    """:func:`reconcile_run`; a run whose files cannot be read back is reported, not raised: every damaged
    JSON/JSONL object as a finding (``damaged``: path and what is wrong) and a problem, the counts zero."""
    try:
        return reconcile_run(run, attempt_log=attempt_log, secrets=secrets, check_consumer=check_consumer)
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        root = run.layout.root if isinstance(run, RunState) else str(run).rstrip("/")
        damaged = damaged_files(root)
        if not damaged:
            raise
        problems = [f"{d['path']}: {d['problem']}" for d in damaged]
        problems.append(f"the run cannot be reconciled until the damaged files are restored ({type(exc).__name__})")
        return Reconciliation(0, 0, 0, 0, 0, 0, 0, problems=problems, damaged=damaged,
                              published=storage.exists(storage.join(root, SUCCESS)))


def reconcile_run(run: RunRef, *, attempt_log: str | Path | None = None, secrets: Sequence[str] = (),
                  check_consumer: bool = True) -> Reconciliation:
    """Reconcile a run (its dir, local or ``gs://``, or its resolved state); ``problems`` is empty when all holds.

    ``work_redone`` / ``max_work_redone``: from the workers' attempt records (None when the run has
    none): items of batches an attempt began and never committed, in all and the most one attempt
    lost; ``attempts`` adds counts by end state, attempts that overlapped in time on one shard and
    records written after ``manifest.json`` (a worker still running after publishing).
    ``attempt_log``: a JSONL file with one ``{"pid": ..., "ids": [...]}`` line per model call, in
    call order (what ``tests/worker_harness``'s probe writes); with it, ``work_redone_probe`` is the
    number of items generated more than once and ``max_work_redone_probe`` the most one attempt lost.
    ``secrets``: values that must appear in no object of the run (``secret_leak_count``).
    """
    state = as_run_state(run)
    layout: RunLayout = state.layout
    root = layout.root
    report = storage.read_json(layout.validation_report)
    n_input = int(report["rows"]["input"])
    listing = [_rel(root, uri) for uri in storage.list_uris(root)]
    present = set(listing)
    problems: list[str] = []

    # 1. Where every input row and every accepted id ended (the original contract).
    reject_rows = Counter(reject_row_index(r) for r in iter_many(reject_files(layout)))
    accepted_rows: Counter[int] = Counter()
    accepted_ids: Counter[str] = Counter()
    for shard in range(state.num_shards):
        if _rel(root, layout.shard_input(shard, state.num_shards)) not in present:
            continue
        for item in iter_jsonl(layout.shard_input(shard, state.num_shards)):
            accepted_rows[int(item["row_index"])] += 1
            accepted_ids[item["id"]] += 1
    parts = _read_parts(root, listing, state.num_shards)
    done_ids = Counter(i for p in parts if p.kind == "part" for i in p.ids)
    errors_by_shard = _read_errors_files(layout, state.num_shards, present)
    err_ids = Counter(i for ids in errors_by_shard.values() for i in ids[1])
    _add_fanout(layout, present, parts, accepted_rows, accepted_ids, done_ids, err_ids)
    finished = done_ids + err_ids

    all_rows = reject_rows + accepted_rows
    missing_rows = [i for i in range(n_input) if all_rows[i] == 0]
    doubled_rows = [i for i, c in all_rows.items() if c > 1 or not 0 <= i < n_input]
    lost_ids = [i for i in accepted_ids if finished[i] == 0]
    doubled_ids = [i for i, c in finished.items() if c > 1 or i not in accepted_ids]
    if missing_rows:
        problems.append(f"{len(missing_rows)} input rows in no place (first: {missing_rows[:5]})")
    if doubled_rows:
        problems.append(f"{len(doubled_rows)} input rows in more than one place (first: {doubled_rows[:5]})")
    if lost_ids:
        problems.append(f"{len(lost_ids)} accepted ids with no output or error (first: {lost_ids[:5]})")
    if doubled_ids:
        problems.append(f"{len(doubled_ids)} ids output more than once or never accepted (first: {doubled_ids[:5]})")
    rec = Reconciliation(
        input=n_input,
        accepted=sum(accepted_rows.values()),
        rejected=sum(reject_rows.values()),
        generated=sum(done_ids.values()),
        errored=sum(err_ids.values()),
        items_lost=len(missing_rows) + len(lost_ids),
        items_duplicated=len(doubled_rows) + sum(c - 1 for c in finished.values() if c > 1),
        problems=problems,
        published=SUCCESS in present,
    )

    # 2. Orphans, 3. shard manifests, 4. manifest.json and _SUCCESS, 5. what a consumer sees.
    rec.orphans = _orphans(state, listing, parts)
    if rec.orphans:
        problems.append(f"{len(rec.orphans)} objects no manifest or layout accounts for "
                        f"(first: {rec.orphans[:_MAX_LISTED]})")
    rec.checks["shard_manifests"] = _check_shard_manifests(state, present, parts, errors_by_shard, problems)
    rec.checks["manifest_files"] = _check_run_manifest(state, listing, rec, problems)
    if check_consumer:
        rec.consumer_partial_reads = _consumer_partial_reads(root, parts, rec.published, problems)
    _attempt_figures(state, listing, rec)
    if attempt_log is not None:
        rec.work_redone_probe, rec.max_work_redone_probe = work_redone(attempt_log)
    if secrets:
        rec.secret_leak_count = _secret_leaks(root, listing, secrets, problems)
    return rec


# --------------------------------------------------------------------------- reading


def _rel(root: str, uri: str) -> str:
    return uri[len(root):].lstrip("/")


def _read_parts(root: str, listing: list[str], num_shards: int) -> list[_Part]:
    """Every committed part/errors object of every shard in range, read once."""
    parts = []
    for rel in listing:
        m = SHARD_FILE_RE.match(rel)
        if not m or int(m.group(1)) >= num_shards:
            continue
        inner = IN_SHARD_RE.match(m.group(2))
        if not inner or not inner.group(1):
            continue
        data = storage.read_bytes(storage.join(root, rel))
        ids = [str(json.loads(line)["id"]) for line in data.decode("utf-8").split("\n") if line.strip()]
        parts.append(_Part(rel, int(m.group(1)), inner.group(1), data.count(b"\n"),
                           hashlib.sha256(data).hexdigest(), len(data), ids))
    return parts


def _read_errors_files(layout: RunLayout, num_shards: int, present: set[str]) -> dict[int, tuple[int, list[str]]]:
    """shard -> (records, ids) of ``errors/shard-K.jsonl`` where it exists."""
    out = {}
    for shard in range(num_shards):
        uri = layout.errors_file(shard)
        if _rel(layout.root, uri) in present:
            ids = [str(r["id"]) for r in iter_jsonl(uri)]
            out[shard] = (len(ids), ids)
    return out


# --------------------------------------------------------------------------- fan-out


_FANOUT_SHARD = -1
"""``_Part.shard`` of the fan-out copies publish writes: they belong to no shard manifest."""


def _add_fanout(layout: RunLayout, present: set[str], parts: list[_Part], accepted_rows: Counter[int],
                accepted_ids: Counter[str], done_ids: Counter[str], err_ids: Counter[str]) -> None:
    """``sharding.dedupe_identical``: every fanned-out row (``shards/_fanout.jsonl``) is an accepted
    row, and its id finishes as the copy publish wrote for it (:mod:`genbatch.run.fanout`) or, while its
    canonical's shard has no copies yet (before publish), as its canonical did. Updates in place."""
    from genbatch.run.fanout import read_fanout

    entries = read_fanout(layout) if SHARD_FANOUT in present else []
    materialised: set[int] = set()
    for shard in sorted({int(e["shard"]) for e in entries}):
        for uri, kind in ((layout.fanout_part(shard), "part"), (layout.fanout_errors(shard), "errors")):
            rel = _rel(layout.root, uri)
            if rel not in present:
                continue
            data = storage.read_bytes(uri)
            ids = [str(json.loads(line)["id"]) for line in data.decode("utf-8").split("\n") if line.strip()]
            parts.append(_Part(rel, _FANOUT_SHARD, kind, data.count(b"\n"), hashlib.sha256(data).hexdigest(),
                               len(data), ids))
            (done_ids if kind == "part" else err_ids).update(ids)
            materialised.add(shard)
    pending_done, pending_err = [], []
    for e in entries:
        accepted_rows[int(e["row_index"])] += 1
        accepted_ids[str(e["id"])] += 1
        if int(e["shard"]) not in materialised:
            if done_ids[e["canonical_id"]]:
                pending_done.append(str(e["id"]))
            elif err_ids[e["canonical_id"]]:
                pending_err.append(str(e["id"]))
    done_ids.update(pending_done)
    err_ids.update(pending_err)


# --------------------------------------------------------------------------- orphans


def _orphans(state: RunState, listing: list[str], parts: list[_Part]) -> list[str]:
    n = state.num_shards
    output_ids: dict[int, set[str]] = {}
    for p in parts:
        if p.kind == "part":
            output_ids.setdefault(p.shard, set()).update(p.ids)
    plan_committed = SHARD_PLAN in listing
    fanout_rels = {p.rel for p in parts if p.shard == _FANOUT_SHARD}
    orphans = []
    for rel in listing:
        if rel in fanout_rels:
            continue
        if rel in ROOT_FILES or rel.startswith(STAGE_DIRS + OPERATOR_DIRS + (MANIFESTS_PREFIX, REJECTS_PART_PREFIX)):
            continue
        if rel.startswith("_tmp/"):
            if plan_committed:
                orphans.append(rel)  # preprocess deletes its temp objects before writing the plan
            continue
        if rel in (SHARD_PLAN, SHARD_FANOUT):
            continue
        if rel.startswith(ATTEMPTS_DIR):
            m = ATTEMPT_RECORD_RE.match(rel)
            if m is None or int(m.group(1)) >= n:
                orphans.append(rel)
            continue
        m = SHARD_INPUT_RE.match(rel)
        if m:
            if int(m.group(2)) != n or int(m.group(1)) >= n:
                orphans.append(rel)
            continue
        m = ERRORS_FILE_RE.match(rel)
        if m:
            if int(m.group(1)) >= n:
                orphans.append(rel)
            continue
        m = SHARD_FILE_RE.match(rel)
        if m and int(m.group(1)) < n:
            inner = IN_SHARD_RE.match(m.group(2))
            if inner is None:
                orphans.append(rel)
            elif inner.group(2) is not None and inner.group(2) not in output_ids.get(int(m.group(1)), set()):
                orphans.append(rel)  # an image no output record points at
            continue
        orphans.append(rel)
    return orphans


# --------------------------------------------------------------------------- manifests


def _check_shard_manifests(state: RunState, present: set[str], parts: list[_Part],
                           errors_by_shard: dict[int, tuple[int, list[str]]], problems: list[str]) -> int:
    """Each committed shard manifest against the objects of its shard; returns how many it checked."""
    layout = state.layout
    checked = 0
    for shard in range(state.num_shards):
        uri = layout.shard_manifest(shard)
        if _rel(layout.root, uri) not in present:
            continue
        checked += 1
        m = storage.read_json(uri)
        where = f"shard {shard} manifest"
        # What the manifest claims is checked; a claim it does not make (a hand-built manifest
        # without run_id or parts) is not invented.
        if m.get("shard", shard) != shard or m.get("run_id", state.run_id) != state.run_id:
            problems.append(f"{where} names shard {m.get('shard')} of run {m.get('run_id')!r}")
        actual = {p.rel: p for p in parts if p.shard == shard and p.kind == "part"}
        listed = {str(e["path"]): e for e in m.get("parts", [])} if "parts" in m else dict.fromkeys(actual, None)
        for rel in sorted(set(listed) - set(actual)):
            problems.append(f"{where} lists {rel}, which does not exist")
        for rel in sorted(set(actual) - set(listed)):
            problems.append(f"{rel} is not in the {where} (written after the shard committed?)")
        for rel in sorted(set(actual) & set(listed)):
            e, p = listed[rel], actual[rel]
            if e is None:
                continue
            if int(e.get("records", -1)) != p.records or e.get("sha256") != p.sha256:
                problems.append(f"{where}: {rel} has {p.records} records sha256 {p.sha256[:12]}…, the manifest says "
                                f"{e.get('records')} records sha256 {str(e.get('sha256'))[:12]}…")
        generated = sum(p.records for p in actual.values())
        if int(m.get("generated", -1)) != generated:
            problems.append(f"{where} says generated={m.get('generated')}, its parts hold {generated} records")
        errored = errors_by_shard.get(shard, (0, []))[0]
        if int(m.get("errored", -1)) != errored:
            problems.append(f"{where} says errored={m.get('errored')}, {layout.errors_file(shard)} holds {errored}")
    return checked


def _check_run_manifest(state: RunState, listing: list[str], rec: Reconciliation, problems: list[str]) -> int:
    """manifest.json against the counts and every object; returns how many file entries it checked."""
    layout = state.layout
    has_manifest, has_success = MANIFEST in listing, SUCCESS in listing
    if has_success and not has_manifest:
        problems.append("_SUCCESS exists but manifest.json does not: consumers cannot read this run")
    if not has_manifest:
        return 0
    manifest_data = storage.read_bytes(layout.manifest)
    m = json.loads(manifest_data)
    if has_success:
        problem = success_problem(storage.read_bytes(layout.success), manifest_data)
        if problem:
            problems.append(problem)
        if FAILED in listing:
            problems.append("_FAILED exists beside _SUCCESS: a published run was marked failed")
    if m.get("run_id") != state.run_id:
        problems.append(f"manifest.json names run {m.get('run_id')!r}, this run is {state.run_id!r}")
    counts = m.get("counts") or {}
    for key, value in rec.counts().items():
        if counts.get(key) != value:
            problems.append(f"manifest.json counts.{key}={counts.get(key)}, the objects give {value}")
    for entry in m.get("shards", []):
        shard = int(entry["shard"])
        if 0 <= shard < state.num_shards and _rel(layout.root, layout.shard_manifest(shard)) in listing:
            sm = storage.read_json(layout.shard_manifest(shard))
            for key in ("generated", "errored"):
                if entry.get(key) != sm.get(key):
                    problems.append(f"manifest.json shard {shard} {key}={entry.get(key)}, its shard manifest says {sm.get(key)}")
        else:
            problems.append(f"manifest.json lists shard {shard}, which has no shard manifest")
    if len(m.get("shards", [])) != state.num_shards:
        problems.append(f"manifest.json lists {len(m.get('shards', []))} shards, the run has {state.num_shards}")
    files = {str(f["path"]): f for f in m.get("files", [])}
    present = set(listing)
    for rel in sorted(files):
        if rel not in present:
            problems.append(f"manifest.json lists {rel}, which does not exist")
            continue
        size, sha = storage.digest(layout.path(rel))
        if size != files[rel].get("bytes") or sha != files[rel].get("sha256"):
            problems.append(f"{rel} does not match manifest.json ({size} bytes sha256 {sha[:12]}…, listed "
                            f"{files[rel].get('bytes')} bytes sha256 {str(files[rel].get('sha256'))[:12]}…)")
    # Attempt records are the workers' bookkeeping, never outputs: one written after manifest.json (a
    # worker that was still running) is reported in ``attempts.after_publish``, not as an orphan; any
    # output object it wrote is.
    unlisted = [rel for rel in listing if rel not in files and listed_in_manifest(rel)
                and not rel.startswith(OPERATOR_DIRS + (ATTEMPTS_DIR,))]
    if unlisted:
        problems.append(f"{len(unlisted)} objects are not in manifest.json (written after publishing?): {unlisted[:_MAX_LISTED]}")
        rec.orphans.extend(r for r in unlisted if r not in rec.orphans)
    return len(files)


# --------------------------------------------------------------------------- the consumer's view


def _consumer_partial_reads(root: str, parts: list[_Part], published: bool, problems: list[str]) -> int:
    """Read the run as a consumer would, now: 1 if that read handed over a partial result."""
    from genbatch.run.outputs import OutputIntegrityError, RunNotPublishedError, read

    seen: list[str] = []
    try:
        for record in read(root, wait_s=0):
            seen.append(str(record.get("id")))
    except RunNotPublishedError:
        if seen:
            problems.append(f"a consumer read {len(seen)} records of an unpublished run")
            return 1
        return 0
    except OutputIntegrityError as exc:
        problems.append(f"a consumer read failed the integrity check: {exc}")
        return 1 if seen else 0
    if not published:
        problems.append(f"a consumer read {len(seen)} records although _SUCCESS does not exist")
        return 1
    committed = Counter(i for p in parts if p.kind == "part" for i in p.ids)
    if Counter(seen) != committed:
        problems.append(f"a consumer read {len(seen)} records, the committed parts hold {sum(committed.values())}")
        return 1
    return 0


# --------------------------------------------------------------------------- optional figures


def work_redone(attempt_log: str | Path) -> tuple[int, int]:
    """(items generated more than once, the most any one attempt lost) from an attempt log.

    The log has one ``{"pid": P, "ids": [...]}`` line per model call, in call order. An attempt
    is one pid; an item an attempt handed to the model and a *later* attempt handed again is
    work that attempt lost (it never committed it).
    """
    path = Path(attempt_log)
    if not path.exists():
        return 0, 0
    order: list[Any] = []
    started: dict[Any, set[str]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        pid = entry["pid"]
        if pid not in started:
            order.append(pid)
            started[pid] = set()
        started[pid].update(str(i) for i in entry["ids"])
    total = sum(len(s) for s in started.values())
    distinct = len(set().union(*started.values())) if started else 0
    lost_per_attempt = []
    for n, pid in enumerate(order):
        later: set[str] = set().union(*(started[p] for p in order[n + 1:])) if n + 1 < len(order) else set()
        lost_per_attempt.append(len(started[pid] & later))
    return total - distinct, max(lost_per_attempt, default=0)


def _attempt_figures(state: RunState, listing: list[str], rec: Reconciliation) -> None:
    """work_redone and the attempts summary from the workers' records (models/attempts.py)."""
    records = [rel for rel in listing if rel.startswith(ATTEMPTS_DIR)]
    if not records:
        return
    from genbatch.run.attempts import figures, summarise

    summary = figures(summarise(state.layout.root, records + [r for r in listing if r.startswith("outputs/")],
                                state.num_shards))
    rec.work_redone, rec.max_work_redone = summary.pop("work_redone"), summary.pop("max_work_redone")
    listed: set[str] = set()
    if MANIFEST in listing:
        listed = {str(f.get("path")) for f in storage.read_json(state.layout.manifest).get("files", [])}
        summary["after_publish"] = sum(1 for r in records if r not in listed)
    rec.attempts = summary


def _secret_leaks(root: str, listing: list[str], secrets: Sequence[str], problems: list[str]) -> int:
    needles = [s.encode("utf-8") for s in secrets if s]
    leaks = [rel for rel in listing if any(n in storage.read_bytes(storage.join(root, rel)) for n in needles)]
    if leaks:
        problems.append(f"{len(leaks)} objects contain a secret value: {leaks[:_MAX_LISTED]}")
    return len(leaks)
