"""GCS faults while the registry swaps aliases (compare-and-swap on ``aliases.json``), and racing swaps.

Each promotion or rollback is one compare-and-swap: read the object's metadata (generation),
download it, upload the new document conditional on that generation. The proxy injects one
fault per operation at a random one of those requests, every kind once per repeat. Each operation must
succeed once (aliases as intended, exactly one audit record), and the client must have seen
every injected fault (injected == observed).

A lost or cut response to the conditional *upload* has its own test: the swap was applied and the
retry meets 412. Each CAS upload carries a unique write id in its metadata, so
``compare_and_swap_json`` finds its own write on re-read and the promotion succeeds once. Racing
swaps under random 503/429 (at least one per repeat) have exactly one winner.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import registry as reg
from tests.fault_proxy import ClientObserver, FaultProxy, Rule, expected_observation
from tests.faults._support import Figures, record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT_TIMEOUT_S = 2.0
READ_KINDS = ("http-429", "http-500", "http-503", "http-408", "reset", "stall", "cut", "lost_response")
WRITE_KINDS = ("http-429", "http-500", "http-503", "http-408", "reset", "stall")
TARGETS = {
    # the three requests of one compare-and-swap, selected by path (or the upload body's name)
    "metadata": {"method": "GET", "path": r"^/storage/v1/b/[^/]+/o/[^?]*/aliases\.json"},
    "download": {"method": "GET", "path": r"^/download/storage/v1/b/[^/]+/o/[^?]*/aliases\.json"},
    "upload": {"method": "POST", "path": r"^/upload/", "body": r'"name":\s*"[^"]*/aliases\.json"'},
}


def _rule(kind: str, target: str, rng: random.Random) -> Rule:
    t = TARGETS[target]
    name = f"{kind}@{target}"
    body = t.get("body")
    if kind.startswith("http-"):
        return Rule("status", method=t["method"], path=t["path"], body=body, nth=(1,), status=int(kind[5:]), name=name)
    if kind == "stall":
        return Rule("stall", method=t["method"], path=t["path"], body=body, nth=(1,), stall_s=CLIENT_TIMEOUT_S + 1.0,
                    name=name)
    if kind == "cut":
        return Rule("cut", method=t["method"], path=t["path"], body=body, nth=(1,), cut_after=rng.randint(0, 40), name=name)
    return Rule(kind, method=t["method"], path=t["path"], body=body, nth=(1,), name=name)


def _model_dir(tmp: Path, tag: str) -> Path:
    d = tmp / f"src-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"tag": tag}))
    (d / "model.safetensors").write_bytes(tag.encode() * 64)
    return d


@pytest.fixture
def gcs_registry(proxied_gcs: FaultProxy, gcs_bucket: str, tmp_path: Path) -> Iterator[str]:
    root = f"gs://{gcs_bucket}/registry"
    for tag in ("a", "b", "c"):
        reg.register_version(root, "m", _model_dir(tmp_path, tag))
    reg.set_alias(root, "m", "production", 1, reason="start")
    yield root


def _events(root: str) -> Counter[str]:
    return Counter(e["event"] for e in reg.read_audit(root, "m"))


def test_transient_faults_during_alias_swaps_apply_each_swap_once(
        gcs_registry: str, proxied_gcs: FaultProxy, faults_repeat: int, faults_seed: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENBATCH_GCS_TIMEOUT_S", str(CLIENT_TIMEOUT_S))
    rng = random.Random(faults_seed + 7)
    root = gcs_registry
    totals: Counter[str] = Counter()
    for rep in range(faults_repeat):
        # Every kind once per repeat, on a random one of the swap's three requests (a lost or cut
        # answer only on the reads: on the upload it has its own test below), in random order.
        ops = [(k, rng.choice(["metadata", "download", "upload"] if k in WRITE_KINDS else ["metadata", "download"]))
               for k in READ_KINDS]
        rng.shuffle(ops)
        t0 = time.monotonic()
        before_events = _events(root)
        injected_rep: Counter[str] = Counter()
        observed_rep: Counter[str] = Counter()
        for kind, target in ops:
            proxied_gcs.clear()
            current = reg.read_aliases(root, "m")
            rule = proxied_gcs.add(_rule(kind, target, rng))
            with ClientObserver() as seen:
                if "previous" in current and rng.random() < 0.5:
                    after = reg.rollback(root, "m", reason=f"rep {rep} {kind}@{target}")
                    want = current["previous"]
                else:
                    target_version = rng.choice([v for v in (1, 2, 3) if v != current["production"]])
                    after = reg.promote(root, "m", target_version, reason=f"rep {rep} {kind}@{target}",
                                        expect_production=current["production"])
                    want = target_version
            assert rule.injected == 1, f"{rule.name} did not fire: the fault was not hit"
            assert after["production"] == want and reg.read_aliases(root, "m") == after
            assert seen.observed() == expected_observation(proxied_gcs.injected()), (rule.name, seen.observed())
            injected_rep.update(proxied_gcs.injected())
            observed_rep.update(seen.observed())
        events = _events(root) - before_events
        assert sum(events.values()) == len(ops), f"one audit record per swap, got {dict(events)} for {len(ops)} swaps"
        record(Figures("gcs-alias-cas", injected=sum(injected_rep.values()), observed=sum(observed_rep.values()),
                       seconds=round(time.monotonic() - t0, 2),
                       detail={"injected_by_kind": dict(injected_rep), "swaps": len(ops), "audit_events": dict(events)}))
        totals.update(injected_rep)
    assert all(totals[k] == faults_repeat for k in READ_KINDS), totals


@pytest.mark.parametrize("kind", ["lost_response", "cut"])
def test_lost_response_to_an_applied_alias_swap_is_success(gcs_registry: str, proxied_gcs: FaultProxy,
                                                           kind: str) -> None:
    """The swap was applied, its answer lost: the retry meets 412, finds its own write id, succeeds."""
    root = gcs_registry
    rule = proxied_gcs.add(_rule(kind, "upload", random.Random(1)))
    before = _events(root)
    t0 = time.monotonic()
    with ClientObserver() as seen:
        after = reg.promote(root, "m", 2, reason=f"{kind} on the swap", expect_production=1)
    injected = proxied_gcs.injected()
    record(Figures(f"gcs-alias-{kind}", injected=rule.injected, observed=sum(seen.observed().values()),
                   seconds=round(time.monotonic() - t0, 2), detail={"client_412": seen.count("412")}))
    assert rule.injected == 1, f"{rule.name} fired {rule.injected} times on {rule.matched} matching requests"
    assert seen.observed() == expected_observation(injected), (dict(injected), dict(seen.observed()))
    assert seen.count("412") == 1, "the retry of the applied swap must meet 412"
    assert after["production"] == 2
    assert _events(root) - before == Counter({"promote": 1})


def test_racing_alias_swaps_under_faults_have_exactly_one_winner(
        gcs_registry: str, proxied_gcs: FaultProxy, faults_repeat: int, faults_seed: int) -> None:
    """Four promoters with the same expectation, while 10-20% of aliases.json requests fail (503/429).

    One 503 on a random one of the first ``contenders`` requests for aliases.json (each promoter makes
    at least one) makes sure every repeat injects something, whatever the random rules draw."""
    root = gcs_registry
    contenders = 4
    for rep in range(faults_repeat):
        proxied_gcs.clear()
        start = reg.read_aliases(root, "m")["production"]  # before the rules: every fault falls in the race
        # First in the list, so it is the rule chosen on its occurrence.
        sure = proxied_gcs.add(Rule("status", path=r"/aliases\.json", status=503,
                                    nth=(random.Random(faults_seed + 3000 + rep).randint(1, contenders),),
                                    name="503-sure"))
        for status, seed in ((503, faults_seed + rep), (429, faults_seed + 1000 + rep)):
            proxied_gcs.add(Rule("status", path=r"/aliases\.json", status=status, probability=0.1, seed=seed,
                                 max_injections=6, name=f"{status}-random"))
        proxied_gcs.add(Rule("status", method="POST", path=r"^/upload/", body=r'"name":\s*"[^"]*/aliases\.json"',
                             status=503, probability=0.2, seed=faults_seed + 2000 + rep, max_injections=4,
                             name="503-upload"))
        barrier = threading.Barrier(contenders)
        outcomes: list[str] = []
        lock = threading.Lock()
        t0 = time.monotonic()

        def contend(version: int, start: int = start, barrier: threading.Barrier = barrier,
                    outcomes: list[str] = outcomes, lock: threading.Lock = lock) -> None:
            barrier.wait()
            try:
                reg.promote(root, "m", version, reason="race", expect_production=start)
                result = f"won:{version}"
            except reg.AliasConflictError:
                result = "lost"
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                result = f"error:{type(exc).__name__}:{exc}"
            with lock:
                outcomes.append(result)

        others = [v for v in (1, 2, 3) if v != start]
        with ClientObserver() as seen:
            threads = [threading.Thread(target=contend, args=(others[i % 2],)) for i in range(contenders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
        winners = [o for o in outcomes if o.startswith("won")]
        injected = proxied_gcs.injected()
        record(Figures("gcs-alias-race", injected=sum(injected.values()), observed=sum(seen.observed().values()),
                       seconds=round(time.monotonic() - t0, 2), detail={"outcomes": sorted(outcomes)}))
        assert len(outcomes) == contenders and len(winners) == 1, outcomes
        assert all(o == "lost" for o in outcomes if not o.startswith("won")), outcomes
        assert reg.read_aliases(root, "m")["production"] == int(winners[0].split(":")[1])
        assert sure.injected == 1 and sum(injected.values()) > 0, \
            f"the sure 503 fired {sure.injected} times on {sure.matched} requests; injected {dict(injected)}"
        assert seen.observed() == expected_observation(injected), (dict(injected), dict(seen.observed()))
