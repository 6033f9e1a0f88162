"""GCS faults during a real run's writes, through the fault proxy in front of fake-gcs-server.

Each repeat copies one prepared run (validated and preprocessed for real) to a fresh prefix and
finishes it — every shard generated in-process, the quality gate, publish — while the proxy
injects eight faults at random points, one of each kind (429, 500, 503, 408, connection reset,
stall past the client timeout, response cut short, response lost after the write was applied),
shuffled over the writes that commit a run: output parts, the errors file and the manifest of a
shard, ``manifest.json`` and ``_SUCCESS``. A consumer polls ``genbatch.run.outputs.read`` all along.

Then: nothing lost or doubled (``reconcile``), no partial read, every injected fault observed by
the client as one failed attempt (injected == observed, per kind), every lost or cut response
of a create-only write resolved by one 412 and a checksum match, and the published records equal,
id by id, those of the same run finished with no faults.

A write delivered late (``gcs-late-write``): the proxy holds one create-only write past the client's
timeout, the client retries, and the held request is delivered after the retry (it must get 412
and change nothing) or just before it (the retry must get 412 and resolve it by checksum).

Also: a non-retryable 403 fails fast with one clear message and one request for the object
(in-process on each write site, and once through the real worker CLI).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import StorageError
from genbatch.io import gcs, storage
from genbatch.run.reconcile import reconcile
from tests.fault_proxy import ClientObserver, FaultProxy, Rule, expected_observation
from tests.faults._support import (
    Consumer,
    EchoRunner,
    Figures,
    catalog_rows,
    clone_run,
    finish,
    prepare,
    published_ids,
    published_records,
    record,
    text_spec,
    write_input,
)
from tests.worker_harness import worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_ITEMS, SHARDS, BATCH = 24, 2, 4  # 3 parts per shard
CLIENT_TIMEOUT_S = 2.0
KINDS = ("http-429", "http-500", "http-503", "http-408", "reset", "stall", "cut", "lost_response")
# Upload bodies carry the object name in their metadata part: the rules select the write by it.
SITES = {
    "part": r'"name":\s*"[^"]*/outputs/shard-\d{5}/part-r\d\d-\d{5}\.jsonl"',
    "errors_file": r'"name":\s*"[^"]*/errors/shard-\d{5}\.jsonl"',
    "shard_manifest": r'"name":\s*"[^"]*/outputs/shard-\d{5}/_manifest\.json"',
    "manifest_json": r'"name":\s*"[^"]*/manifest\.json"',
    "success": r'"name":\s*"[^"]*/_SUCCESS"',
}
SITE_WRITES = {"part": SHARDS * (N_ITEMS // SHARDS // BATCH), "errors_file": SHARDS, "shard_manifest": SHARDS,
               "manifest_json": 1, "success": 1}
SLOTS = ["part", "part", "part", "part", "errors_file", "shard_manifest", "manifest_json", "success"]


def _rule(kind: str, site: str, nth: int, rng: random.Random) -> Rule:
    common: dict[str, Any] = {"method": "POST", "path": r"^/upload/storage/v1/b/", "body": SITES[site], "nth": (nth,),
              "name": f"{kind}@{site}#{nth}"}
    if kind.startswith("http-"):
        return Rule("status", status=int(kind[5:]), **common)
    if kind == "stall":
        return Rule("stall", stall_s=CLIENT_TIMEOUT_S + 1.0, **common)
    if kind == "cut":
        return Rule("cut", cut_after=rng.randint(0, 120), **common)
    return Rule(kind, **common)


def _plan(rng: random.Random) -> list[tuple[str, str, int]]:
    """Eight (kind, site, nth): every kind once, on shuffled sites, at random occurrences."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    used: dict[str, set[int]] = {}
    plan = []
    for kind, site in zip(kinds, SLOTS, strict=True):
        free = [n for n in range(1, SITE_WRITES[site] + 1) if n not in used.setdefault(site, set())]
        nth = rng.choice(free)
        used[site].add(nth)
        plan.append((kind, site, nth))
    return plan


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, fault_proxy: FaultProxy, gcs_emulator: object,
             zoo_registry: str) -> Iterator[tuple[str, str]]:
    """(bucket, run dir) of a run prepared for real on gs:// (validated, preprocessed), not generated."""
    tmp = tmp_path_factory.mktemp("gcs-faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
        storage.reset_client()
        bucket = gcs_emulator.create_bucket(f"faults-{random.getrandbits(40):010x}")  # type: ignore[attr-defined]
        inp = write_input(tmp / "input.jsonl", catalog_rows(N_ITEMS))
        run_dir = prepare(text_spec(inp, f"gs://{bucket}/template", zoo_registry, run_id="gcs-faults",
                                    num_shards=SHARDS, batch_size=BATCH))
        yield bucket, run_dir
    storage.reset_client()


@pytest.fixture(scope="module")
def reference(template: tuple[str, str], fault_proxy: FaultProxy) -> dict[str, dict[str, object]]:
    """The same run finished with no fault: what every faulted repeat must publish."""
    bucket, run_dir = template
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
        storage.reset_client()
        clean = clone_run(run_dir, f"gs://{bucket}/clean")
        finish(clean, EchoRunner())
        assert reconcile(clean).ok
        return published_records(clean)


def test_transient_faults_on_every_commit_write_lose_and_double_nothing(
        template: tuple[str, str], reference: dict[str, dict[str, object]], proxied_gcs: FaultProxy,
        faults_repeat: int, faults_seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket, run_dir = template
    monkeypatch.setenv("GENBATCH_GCS_TIMEOUT_S", str(CLIENT_TIMEOUT_S))
    rng = random.Random(faults_seed)
    totals: Counter[str] = Counter()
    for rep in range(faults_repeat):
        proxied_gcs.clear()
        work = clone_run(run_dir, f"gs://{bucket}/rep-{faults_seed}-{rep}")
        plan = _plan(rng)
        rules = [proxied_gcs.add(_rule(kind, site, nth, rng)) for kind, site, nth in plan]
        consumer = Consumer(work, poll_s=0.1)
        t0 = time.monotonic()
        with ClientObserver() as seen:
            consumer.start()
            finish(work, EchoRunner())
            rec = reconcile(work)
            final = published_ids(work)
        partial = consumer.finish(final)
        elapsed = time.monotonic() - t0
        injected = proxied_gcs.injected()
        missed = [r.name for r in rules if r.injected != 1]
        # A lost or cut answer to a create-only write: the write landed, so the retry meets 412 and
        # resolves by checksum. Occurrences count retries too, so two such faults can hit one object
        # (the second on the retry's 412): one fully answered 412 per object.
        applied = {h["object"] for r in rules if r.action in ("lost_response", "cut") for h in r.hits}
        figures = Figures("gcs-writes", injected=sum(injected.values()), observed=sum(seen.observed().values()),
                          lost=rec.items_lost, doubled=rec.items_duplicated, partial_reads=partial + rec.consumer_partial_reads,
                          seconds=round(elapsed, 2),
                          detail={"injected_by_kind": dict(injected), "observed_by_kind": dict(seen.observed()),
                                  "plan": [f"{k}@{s}#{n}" for k, s, n in plan], "resolved_412": seen.count("412")})
        record(figures)
        assert not missed, f"repeat {rep}: rules that did not fire exactly once: {missed} ({plan})"
        assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0, rec.to_json()
        assert rec.generated == N_ITEMS and rec.orphans == []
        assert partial == 0 and rec.consumer_partial_reads == 0, (consumer.partial, consumer.errors[:3])
        assert consumer.not_published > 0, "the consumer never polled before _SUCCESS: nothing was tested"
        assert seen.observed() == expected_observation(injected), (dict(injected), dict(seen.observed()), plan)
        assert seen.count("412") == len(applied), "each applied-but-unanswered create-only write resolves by one 412"
        assert published_records(work) == reference, f"repeat {rep}: published records differ from the clean run"
        totals.update(injected)
    assert all(totals[k] == faults_repeat for k in KINDS), totals


# --------------------------------------------------------------------------- 403: fail fast

FORBIDDEN_SITES = ("part", "shard_manifest", "errors_file", "manifest_json", "success")


def test_non_retryable_403_fails_fast_with_one_request_and_one_message(
        template: tuple[str, str], proxied_gcs: FaultProxy, faults_repeat: int, faults_seed: int) -> None:
    bucket, run_dir = template
    rng = random.Random(faults_seed + 403)
    for rep in range(faults_repeat):
        site = FORBIDDEN_SITES[rep % len(FORBIDDEN_SITES)]
        nth = rng.randint(1, SITE_WRITES[site])
        proxied_gcs.clear()
        work = clone_run(run_dir, f"gs://{bucket}/forbidden-{faults_seed}-{rep}")
        rule = proxied_gcs.add(Rule("status", status=403, method="POST", path=r"^/upload/", body=SITES[site],
                                    nth=(nth,), name=f"403@{site}#{nth}"))
        t0 = time.monotonic()
        message = ""
        with ClientObserver() as seen:
            try:
                finish(work, EchoRunner())
            except StorageError as exc:
                message = str(exc)
        elapsed = time.monotonic() - t0
        obj = rule.hits[0]["object"] if rule.hits else ""
        writes = [r for r in proxied_gcs.requests_for(obj) if r.method == "POST"]
        record(Figures("gcs-403", injected=rule.injected, observed=seen.count("403"), seconds=round(elapsed, 2),
                       detail={"site": site, "object": obj, "write_requests_for_object": len(writes)}))
        assert rule.injected == 1 and seen.count("403") == 1, f"{rule.name}: injected {rule.injected}, " \
            f"client saw {seen.count('403')} 403s; the run {'failed: ' + message if message else 'succeeded'}"
        hit = rule.hits[0]
        assert len(writes) == 1, [(r.method, r.outcome) for r in writes]  # no retry of the refused write
        assert "HTTP 403" in message and hit["object"] in message, message
        assert elapsed < 30, f"a 403 took {elapsed:.1f} s to surface"
        rec = reconcile(work)
        assert rec.items_duplicated == 0 and not rec.published


def test_403_through_the_real_worker_cli_is_one_line_and_exit_2(
        template: tuple[str, str], proxied_gcs: FaultProxy, tmp_path: Path) -> None:
    bucket, run_dir = template
    work = clone_run(run_dir, f"gs://{bucket}/forbidden-cli")
    rule = proxied_gcs.add(Rule("status", status=403, method="POST", path=r"^/upload/", body=SITES["part"],
                                nth=(1,), name="403@part#1"))
    env = {**worker_env(), "STORAGE_EMULATOR_HOST": proxied_gcs.url}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "genbatch", "worker", "--run-dir", work, "--shard", "0",
                           "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300, check=False)
    elapsed = time.monotonic() - t0
    obj = rule.hits[0]["object"] if rule.hits else ""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("genbatch worker: error:")]
    writes = [r for r in proxied_gcs.requests_for(obj) if r.method == "POST"]
    record(Figures("gcs-403-cli", injected=rule.injected, observed=len(errors), seconds=round(elapsed, 2),
                   detail={"object": obj, "write_requests_for_object": len(writes)}))
    assert rule.injected == 1 and len(errors) == 1, f"injected {rule.injected}, worker exit {proc.returncode}, " \
        f"error lines {errors}"
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "HTTP 403" in errors[0] and obj in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(writes) == 1


# --------------------------------------------------------------------------- a write delivered late

LATE_TIMEOUT_S = 1.5
LATE_SITES = ("part", "errors_file", "shard_manifest", "manifest_json", "success")


def test_a_create_only_write_delivered_late_meets_its_retry_and_changes_nothing(
        template: tuple[str, str], reference: dict[str, dict[str, object]], proxied_gcs: FaultProxy,
        faults_repeat: int, faults_seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write request held past the client's timeout (the client retries) and delivered late.

    ``after_retry``: the retry created the object; the late write arrives after it and must get 412
    from the server (create-only), changing nothing. ``before_retry``: the late write lands first;
    the retry must get 412 and resolve it by the sha256 in the metadata (identical: success). Either
    way: one object, the bytes a fault-free run writes, nothing lost, doubled or published early.
    """
    bucket, run_dir = template
    monkeypatch.setenv("GENBATCH_GCS_TIMEOUT_S", str(LATE_TIMEOUT_S))
    rng = random.Random(faults_seed + 7)
    releases = ("after_retry", "before_retry")
    for rep in range(faults_repeat):
        proxied_gcs.clear()
        work = clone_run(run_dir, f"gs://{bucket}/late-{faults_seed}-{rep}")
        site = LATE_SITES[rng.randrange(len(LATE_SITES))]
        nth = rng.randint(1, SITE_WRITES[site])
        release = releases[rep % 2]
        rule = proxied_gcs.add(Rule("delay", method="POST", path=r"^/upload/storage/v1/b/", body=SITES[site],
                                    nth=(nth,), stall_s=30.0, release=release, name=f"delay@{site}#{nth}"))
        consumer = Consumer(work, poll_s=0.1)
        t0 = time.monotonic()
        with ClientObserver() as seen:
            consumer.start()
            finish(work, EchoRunner())
            delayed = proxied_gcs.delayed()
            rec = reconcile(work)
            final = published_ids(work)
        partial = consumer.finish(final)
        elapsed = time.monotonic() - t0
        assert rule.injected == 1 and len(delayed) == 1, f"{rule.name}: injected {rule.injected}, held {len(delayed)}"
        (held,) = delayed
        assert held.object is not None
        writes = [r for r in proxied_gcs.requests_for(held.object) if r.method == "POST"]
        uri = f"gs://{bucket}/{held.object}"
        stored = storage.read_bytes(uri)
        listed = [u for u in storage.list_uris(uri.rsplit("/", 1)[0]) if u == uri]
        # injected == observed: the client saw the held request as one failed (timed-out) attempt and,
        # when the late write landed first, its retry met one 412 that the checksum resolved.
        observed = seen.observed()
        record(Figures("gcs-late-write", injected=rule.injected, observed=sum(observed.values()),
                       lost=rec.items_lost, doubled=rec.items_duplicated, partial_reads=partial + rec.consumer_partial_reads,
                       seconds=round(elapsed, 2),
                       detail={"site": site, "nth": nth, "release": release, "late_status": held.late_status,
                               "released_by": held.released_by, "client_412": seen.count("412"),
                               "writes": [r.outcome for r in writes]}))
        assert rule.injected == 1 and observed == expected_observation(proxied_gcs.injected()), (dict(observed), writes)
        assert held.released_by == "retry", f"the held request was never followed by a retry: {writes}"
        if release == "after_retry":
            assert held.late_status == 412, f"a late create-only write was not refused: {held.late_status} ({writes})"
            assert seen.count("412") == 0
        else:
            assert held.late_status == 200, writes
            assert seen.count("412") == 1, "the retry must meet the late write and resolve it by checksum"
        blob = gcs.client().bucket(bucket).get_blob(held.object)
        assert len(listed) == 1 and blob is not None, listed
        assert (blob.metadata or {}).get("sha256") == hashlib.sha256(stored).hexdigest(), "content and metadata differ"
        assert rec.ok and rec.items_lost == 0 and rec.items_duplicated == 0 and rec.orphans == [], rec.to_json()
        assert partial == 0 and rec.consumer_partial_reads == 0, (consumer.partial, consumer.errors[:3])
        assert published_records(work) == reference, f"repeat {rep}: published records differ from the clean run"
