"""The fault proxy on its own, in front of the real fake-gcs-server, driven by the official client.

Each test that adds a rule asserts the rule fired (``injected``) and that the client saw it, so with
``GENBATCH_FAULTS_INJECT=0`` it fails; the name parser and rule checks inject nothing.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from typing import Any

import pytest

from devstack.gcs_emulator import GcsEmulator
from genbatch.errors import StorageError
from genbatch.io import storage
from tests.fault_proxy import ClientObserver, FaultProxy, Rule, expected_observation, object_name
from tests.injection import INJECT_ENV

pytestmark = [pytest.mark.integration, pytest.mark.slow]

def _up(action: str, **kwargs: Any) -> Rule:
    """A rule on uploads (every object write of the client is a POST to /upload/...)."""
    return Rule(action, method="POST", path=r"^/upload/", **kwargs)


RULES = {
    "http-429": lambda: _up("status", status=429, nth=(1,)),
    "http-500": lambda: _up("status", status=500, nth=(1,)),
    "http-503": lambda: _up("status", status=503, nth=(1,)),
    "http-408": lambda: _up("status", status=408, nth=(1,)),
    "reset": lambda: _up("reset", nth=(1,)),
    "stall": lambda: _up("stall", stall_s=3.0, nth=(1,)),
    "cut": lambda: _up("cut", cut_after=10, nth=(1,)),
    "lost_response": lambda: _up("lost_response", nth=(1,)),
    "cut-download": lambda: Rule("cut", cut_after=3, nth=(1,), method="GET", path=r"alt=media"),
    "reset-metadata": lambda: Rule("reset", nth=(1,), method="GET", path=r"^/storage/v1/b/[^/]+/o/"),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_each_fault_is_injected_once_observed_once_and_survived(case: str, proxied_gcs: FaultProxy, gcs_bucket: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rule = RULES[case]()
    monkeypatch.setenv("GENBATCH_GCS_TIMEOUT_S", "1.5")
    proxied_gcs.add(rule)
    uri = f"gs://{gcs_bucket}/obj/{rule.kind}.bin"
    payload = b"0123456789" * 50
    with ClientObserver() as seen:
        storage.write_bytes(uri, payload)
        assert storage.read_bytes(uri) == payload
        assert storage.exists(uri)
    assert rule.injected == 1, f"{rule.name} fired {rule.injected} times on {rule.matched} matching requests"
    assert rule.hits[0]["object"] == f"obj/{rule.kind}.bin"
    assert proxied_gcs.injected() == {rule.kind: 1}
    assert seen.observed() == expected_observation(proxied_gcs.injected())
    if rule.action in ("lost_response", "cut") and rule.method == "POST":
        # The write landed; the client's retry met 412 and resolved it by the sha256 in the metadata.
        assert seen.count("412") == 1
        assert [r.outcome for r in proxied_gcs.requests_for(f"obj/{rule.kind}.bin")][:2] == \
            [f"{rule.kind} (server said 200)", "forwarded 412"]


def test_nth_probability_and_cap(proxied_gcs: FaultProxy, gcs_bucket: str) -> None:
    nth = proxied_gcs.add(_up("status", status=503, nth=(2, 3), name="nth"))
    with ClientObserver() as seen:
        for i in range(5):
            storage.write_bytes(f"gs://{gcs_bucket}/n/{i}", b"x")
    assert nth.injected == 2, f"the nth rule fired {nth.injected} times, not on occurrences 2 and 3"
    assert [h["occurrence"] for h in nth.hits] == [2, 3]
    assert seen.observed() == {"http-503": 2}
    # the 2nd upload failed twice (2nd and 3rd matching requests), then succeeded: 7 matches in all
    assert nth.matched == 7

    def decisions(seed: int) -> list[bool]:
        rule = Rule("status", probability=0.5, seed=seed, max_injections=3)
        out = []
        for _ in range(20):
            fired = rule.fires()
            rule.injected += fired  # what the proxy does when a rule fires
            out.append(fired)
        return out

    assert decisions(7) == decisions(7)
    assert decisions(7) != decisions(8)
    assert sum(decisions(7)) == 3  # capped


def test_non_retryable_403_is_one_request(proxied_gcs: FaultProxy, gcs_bucket: str) -> None:
    rule = proxied_gcs.add(_up("status", status=403, nth=(1,)))
    t0 = time.monotonic()
    with ClientObserver() as seen, pytest.raises(StorageError, match="HTTP 403") as info:
        storage.write_bytes(f"gs://{gcs_bucket}/forbidden.bin", b"x")
    assert time.monotonic() - t0 < 5
    assert f"gs://{gcs_bucket}/forbidden.bin" in str(info.value)
    assert rule.injected == 1 and len(proxied_gcs.requests_for("forbidden.bin")) == 1
    # One upload attempt, the 403, never retried (a fresh client may first GET the bucket's metadata).
    uploads = [a.outcome for a in seen.attempts if "/upload/" in a.url]
    assert seen.count("403") == 1 and uploads == ["403"], seen.attempts


def test_cut_sends_exactly_n_bytes_of_the_body(proxied_gcs: FaultProxy, gcs_bucket: str) -> None:
    storage.write_bytes(f"gs://{gcs_bucket}/cut.bin", b"abcdefghij" * 10)
    rule = proxied_gcs.add(Rule("cut", cut_after=7, nth=(1,), method="GET", path=r"alt=media"))
    conn = http.client.HTTPConnection(proxied_gcs.host, proxied_gcs.port, timeout=10)
    conn.request("GET", f"/download/storage/v1/b/{gcs_bucket}/o/cut.bin?alt=media")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == "100"
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == b"abcdefg"
    conn.close()
    assert rule.injected == 1


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_links_the_emulator_hands_out_point_back_at_the_proxy(proxied_gcs: FaultProxy, gcs_bucket: str,
                                                              gcs_emulator: GcsEmulator) -> None:
    storage.write_bytes(f"gs://{gcs_bucket}/linked.bin", b"x")
    conn = http.client.HTTPConnection(proxied_gcs.host, proxied_gcs.port, timeout=10)
    conn.request("GET", f"/storage/v1/b/{gcs_bucket}/o/linked.bin")
    meta = json.loads(conn.getresponse().read())
    conn.close()
    assert urllib.parse.urlsplit(meta["mediaLink"]).port == proxied_gcs.port
    assert str(gcs_emulator.port) not in json.dumps(meta)


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_object_names_from_path_query_and_multipart_body() -> None:
    assert object_name("GET", "/storage/v1/b/bk/o/a%2Fb.json?alt=json", b"") == "a/b.json"
    assert object_name("GET", "/download/storage/v1/b/bk/o/a%2Fb.json?alt=media", b"") == "a/b.json"
    assert object_name("POST", "/upload/storage/v1/b/bk/o?uploadType=media&name=x%2Fy", b"") == "x/y"
    body = b'--==b==\r\ncontent-type: application/json\r\n\r\n{"name": "runs/r/_SUCCESS", "metadata": {}}\r\n--==b=='
    assert object_name("POST", "/upload/storage/v1/b/bk/o?uploadType=multipart", body) == "runs/r/_SUCCESS"
    assert object_name("GET", "/storage/v1/b/bk/o?prefix=runs%2F", b"") == "list:runs/"


def test_stop_releases_stalled_connections_quickly(gcs_emulator: GcsEmulator) -> None:
    rule = Rule("stall", stall_s=60, nth=(1,))
    proxy = FaultProxy(gcs_emulator.url, rules=[rule]).start()
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=30)
    conn.request("GET", "/storage/v1/b")
    time.sleep(0.2)
    t0 = time.monotonic()
    proxy.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        conn.getresponse().read()
    assert time.monotonic() - t0 < 10
    assert rule.injected == 1


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_the_injection_switch_is_read_per_request(proxied_gcs: FaultProxy, gcs_bucket: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Off, a rule that would fire lets the request through untouched (and counts the match); on
    again, the same proxy injects: the switch every fault test is proved against (no injection)."""
    rule = proxied_gcs.add(_up("status", status=503, nth=(1, 2)))
    monkeypatch.setenv(INJECT_ENV, "0")
    with ClientObserver() as seen:
        storage.write_bytes(f"gs://{gcs_bucket}/switch/off.bin", b"x")
    assert (rule.matched, rule.injected, seen.failures) == (1, 0, [])
    assert [r.outcome for r in proxied_gcs.requests_for("switch/off.bin")] == ["forwarded 200"]
    monkeypatch.setenv(INJECT_ENV, "1")
    with ClientObserver() as seen:
        storage.write_bytes(f"gs://{gcs_bucket}/switch/on.bin", b"x")
    assert (rule.matched, rule.injected) == (3, 1) and seen.observed() == {"http-503": 1}


@pytest.mark.no_injection  # injects nothing: bench.faults --injection off leaves it out
def test_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Rule("explode", nth=(1,))
    with pytest.raises(ValueError, match="never fires"):
        Rule("reset")
