"""Arrivals in a watched prefix, on a local directory and on fake-gcs-server, and the ArrivalTrigger's loop.

find_arrivals and storage.list_versions/version run against both backends (the ``storage_root``
fixture); ArrivalTrigger.run() is driven with asyncio as the triggerer would, on real files.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from genbatch.errors import GenbatchError
from genbatch.io import gcs, storage
from genbatch.io.uris import is_gcs, split_gcs
from genbatch.schedule.arrivals import event_key, find_arrivals, input_identity
from operators.triggers import SEEN_PREFIX, ArrivalTrigger

pytestmark = pytest.mark.integration

POLL_S = 0.05


def put(uri: str, text: str = '{"id": "a", "prompt": "p"}\n') -> str:
    storage.write_text(uri, text, overwrite=True)
    return uri


def put_raw(root: str, rel: str, text: str = "x") -> None:
    """An object written around genbatch's writers (a helper-named or folder-placeholder object)."""
    if is_gcs(root):
        bucket, key = split_gcs(storage.join(root, rel) + ("/" if rel.endswith("/") else ""))
        gcs.client().bucket(bucket).blob(key).upload_from_string(text)
    else:
        path = Path(storage.join(root, rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# --------------------------------------------------------------------------- storage versions


def test_list_versions_lists_every_object_with_its_version(storage_root: str) -> None:
    a = put(storage.join(storage_root, "in", "a.jsonl"))
    b = put(storage.join(storage_root, "in", "sub", "b.csv"))
    put(storage.join(storage_root, "other", "c.jsonl"))
    versions = storage.list_versions(storage.join(storage_root, "in"))
    assert sorted(versions) == [a, b] == storage.list_uris(storage.join(storage_root, "in"))
    assert versions[a] == storage.version(a) and versions[b] == storage.version(b)
    assert versions[a] != versions[b]
    assert storage.list_versions(storage.join(storage_root, "in") + "/") == versions, "with or without the slash"
    assert storage.list_versions(storage.join(storage_root, "nothing-here")) == {}


def test_a_rewritten_object_gets_a_new_version_and_an_unchanged_one_keeps_it(storage_root: str) -> None:
    uri = put(storage.join(storage_root, "in", "a.jsonl"))
    first = storage.version(uri)
    assert storage.version(uri) == first == storage.list_versions(storage.join(storage_root, "in"))[uri]
    storage.read_text(uri)  # reading changes nothing
    assert storage.version(uri) == first
    put(uri, '{"id": "a", "prompt": "q"}\n')  # same size, new content
    second = storage.version(uri)
    assert second != first and storage.list_versions(storage.join(storage_root, "in"))[uri] == second
    assert input_identity(uri).version == second and input_identity(uri).key == event_key(uri, second)


def test_the_version_of_a_missing_object_is_not_found(storage_root: str) -> None:
    with pytest.raises(storage.ObjectNotFoundError):
        storage.version(storage.join(storage_root, "in", "missing.jsonl"))


def test_helper_and_placeholder_objects_are_not_listed(storage_root: str) -> None:
    real = put(storage.join(storage_root, "in", "a.jsonl"))
    put_raw(storage_root, "in/.a.jsonl.tmp-" + uuid.uuid4().hex)  # a writer's in-progress temp file
    put_raw(storage_root, "in/.b.jsonl.lock")  # a lock sidecar
    if is_gcs(storage_root):
        put_raw(storage_root, "in/folder/", "")  # the console's folder placeholder
    assert list(storage.list_versions(storage.join(storage_root, "in"))) == [real]
    assert [a.uri for a in find_arrivals(storage.join(storage_root, "in"), pattern="*")] == [real]


# --------------------------------------------------------------------------- find_arrivals


def test_the_pattern_matches_the_path_under_the_prefix(storage_root: str) -> None:
    prefix = storage.join(storage_root, "in")
    uris = {rel: put(storage.join(prefix, rel)) for rel in
            ("a.jsonl", "b.csv", "day-1/c.jsonl", "day-1/d.jsonl.gz", "batch-7.jsonl", "nested/batch-8.jsonl")}
    put(storage.join(storage_root, "in-other", "x.jsonl"))  # a sibling sharing the prefix's name: not under it
    found = find_arrivals(prefix)
    assert [a.uri for a in found] == sorted(uris[r] for r in ("a.jsonl", "batch-7.jsonl", "day-1/c.jsonl",
                                                              "nested/batch-8.jsonl"))
    # The pattern is anchored at the prefix, and fnmatch's * crosses folders.
    assert [a.uri for a in find_arrivals(prefix, pattern="batch-*.jsonl")] == [uris["batch-7.jsonl"]]
    assert [a.uri for a in find_arrivals(prefix, pattern="*/batch-*.jsonl")] == [uris["nested/batch-8.jsonl"]]
    assert [a.uri for a in find_arrivals(prefix, pattern="*batch-*.jsonl")] == sorted(
        [uris["batch-7.jsonl"], uris["nested/batch-8.jsonl"]])
    assert [a.uri for a in find_arrivals(prefix + "/", pattern="day-1/*")] == sorted(
        [uris["day-1/c.jsonl"], uris["day-1/d.jsonl.gz"]])
    assert [a.uri for a in find_arrivals(prefix, pattern="*.csv")] == [uris["b.csv"]]
    for arrival in found:
        assert arrival.version == storage.version(arrival.uri)
        assert arrival.payload() == {"uri": arrival.uri, "version": arrival.version,
                                     "key": event_key(arrival.uri, arrival.version)}
    assert len({a.key for a in found}) == len(found)


def test_a_ready_marker_makes_the_folder_the_batch(storage_root: str) -> None:
    prefix = storage.join(storage_root, "drops")
    for rel in ("d1/part-0.jsonl", "d1/part-1.jsonl", "d2/part-0.jsonl", "d3/deep/part-0.jsonl"):
        put(storage.join(prefix, rel))
    marker = put(storage.join(prefix, "d1", "_READY"), "")
    put(storage.join(prefix, "d3", "deep", "_READY"), "")
    found = find_arrivals(prefix, ready_marker="_READY")
    assert [a.uri for a in found] == [storage.join(prefix, "d1"), storage.join(prefix, "d3", "deep")]
    assert found[0].version == storage.version(marker), "the folder's version is its marker's"
    assert find_arrivals(prefix, ready_marker="_DONE") == []
    # d2 becomes ready; writing a new marker in d1 re-announces it with a new version and key.
    put(storage.join(prefix, "d2", "_READY"), "")
    put(marker, "again\n")
    again = {a.uri: a for a in find_arrivals(prefix, ready_marker="_READY")}
    assert sorted(again) == [storage.join(prefix, "d1"), storage.join(prefix, "d2"), storage.join(prefix, "d3", "deep")]
    assert again[storage.join(prefix, "d1")].key != found[0].key
    assert again[storage.join(prefix, "d3", "deep")].key == found[1].key


def test_a_rewritten_object_is_a_new_arrival_and_an_untouched_one_the_same(storage_root: str) -> None:
    prefix = storage.join(storage_root, "in")
    a, b = put(storage.join(prefix, "a.jsonl")), put(storage.join(prefix, "b.jsonl"))
    before = {x.uri: x.key for x in find_arrivals(prefix)}
    put(a, '{"id": "a2", "prompt": "new"}\n')
    after = {x.uri: x.key for x in find_arrivals(prefix)}
    assert after[b] == before[b] and after[a] != before[a]


@pytest.mark.parametrize("spelling", ["./in", "./in/", "in", "{root}//in", "{root}/./in", "file://{root}/in"])
def test_a_local_prefix_matches_the_pattern_however_it_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  spelling: str) -> None:
    """The listing spells ``./in`` as ``in/...``: the pattern is still matched on the path under the prefix."""
    monkeypatch.chdir(tmp_path)
    put(str(tmp_path / "in" / "batch-1.jsonl"))
    put(str(tmp_path / "in" / "other.jsonl"))
    prefix = spelling.format(root=tmp_path)
    [arrival] = find_arrivals(prefix, pattern="batch-*.jsonl")
    assert arrival.uri.endswith("in/batch-1.jsonl") and arrival.uri.startswith("file://" if "file:" in prefix else "")
    assert storage.version(arrival.uri) == arrival.version


def test_an_absent_local_prefix_has_no_arrivals(tmp_path: Path) -> None:
    assert find_arrivals(str(tmp_path / "not-yet")) == []


# --------------------------------------------------------------------------- ArrivalTrigger.run()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the trigger"
        await asyncio.sleep(POLL_S / 2)


async def _watch(trigger: ArrivalTrigger, script: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> list[dict[str, Any]]:
    """Run the trigger's loop as the triggerer does while ``script`` changes the prefix; then stop it."""
    events: list[dict[str, Any]] = []
    gen = trigger.run()

    async def consume() -> None:
        async for event in gen:
            events.append(event.payload)

    task = asyncio.create_task(consume())
    try:
        await script(events)
        assert not task.done(), "the watch ended by itself"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await gen.aclose()
    return events


def test_the_trigger_fires_once_per_new_object_and_again_when_it_is_rewritten(storage_root: str) -> None:
    prefix = storage.join(storage_root, "in")
    a, b = storage.join(prefix, "a.jsonl"), storage.join(prefix, "day", "b.jsonl")
    put(a)
    put(storage.join(prefix, "notes.txt"))
    trigger = ArrivalTrigger(prefix=prefix, pattern="*.jsonl", poll_s=POLL_S)
    assert trigger.asset_state_store is None

    async def script(events: list[dict[str, Any]]) -> None:
        await _until(lambda: len(events) >= 1)  # an object there before the watch started is new to it
        await asyncio.sleep(POLL_S * 6)  # several listings: nothing again for an object already seen
        assert [e["uri"] for e in events] == [a]
        put(b)
        await _until(lambda: len(events) >= 2)
        put(a, '{"id": "a", "prompt": "rewritten"}\n')
        await _until(lambda: len(events) >= 3)
        await asyncio.sleep(POLL_S * 6)

    events = asyncio.run(_watch(trigger, script))
    assert [e["uri"] for e in events] == [a, b, a]
    assert events[0]["version"] != events[2]["version"] and events[0]["key"] != events[2]["key"]
    for event in events:
        assert event["key"] == event_key(event["uri"], event["version"])
    assert events[2]["version"] == storage.version(a)


def test_the_trigger_announces_a_folder_when_its_marker_appears(tmp_path: Path) -> None:
    prefix = str(tmp_path / "drops")
    trigger = ArrivalTrigger(prefix=prefix, ready_marker="_READY", poll_s=POLL_S)

    async def script(events: list[dict[str, Any]]) -> None:
        put(storage.join(prefix, "d1", "part-0.jsonl"))  # the folder fills up: not yet a batch
        await asyncio.sleep(POLL_S * 6)
        assert events == []
        put(storage.join(prefix, "d1", "_READY"), "")
        await _until(lambda: len(events) >= 1)
        put(storage.join(prefix, "d1", "part-1.jsonl"))  # a file after the marker changes nothing
        await asyncio.sleep(POLL_S * 6)

    events = asyncio.run(_watch(trigger, script))
    assert [e["uri"] for e in events] == [storage.join(prefix, "d1")]


def test_the_trigger_keeps_watching_through_a_storage_error(gcs_emulator: Any) -> None:
    """A bucket that is not there yet fails the listing (StorageError); the watch retries until it is."""
    bucket = f"genbatch-later-{uuid.uuid4().hex[:12]}"
    prefix = f"gs://{bucket}/in"
    with pytest.raises(GenbatchError):
        storage.list_versions(prefix)
    trigger = ArrivalTrigger(prefix=prefix, poll_s=POLL_S)

    async def script(events: list[dict[str, Any]]) -> None:
        await asyncio.sleep(POLL_S * 6)
        gcs_emulator.create_bucket(bucket)
        put(f"{prefix}/a.jsonl")
        await _until(lambda: len(events) >= 1)

    events = asyncio.run(_watch(trigger, script))
    assert [e["uri"] for e in events] == [f"{prefix}/a.jsonl"]


class LedgerDouble:
    """Test double of the triggerer's asset state store (aget/aset of AssetStateStoreAccessors): the real one
    talks to the triggerer's supervisor over its comms channel, which only exists inside a running triggerer."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.entries.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.entries[key] = value


def test_a_restarted_trigger_does_not_announce_what_the_ledger_has_seen(tmp_path: Path) -> None:
    prefix = str(tmp_path / "in")
    a, b = storage.join(prefix, "a.jsonl"), storage.join(prefix, "b.jsonl")
    put(a)
    ledger = LedgerDouble()
    first = ArrivalTrigger(prefix=prefix, poll_s=POLL_S)
    first.asset_state_store = ledger  # type: ignore[assignment]  # see LedgerDouble

    async def one(events: list[dict[str, Any]]) -> None:
        await _until(lambda: len(events) >= 1)

    fired = asyncio.run(_watch(first, one))
    assert [e["uri"] for e in fired] == [a]
    assert ledger.entries == {SEEN_PREFIX + fired[0]["key"]: a}

    # The triggerer restarts: a new instance (from serialize()) with the same ledger.
    classpath, kwargs = first.serialize()
    assert classpath == "operators.triggers.ArrivalTrigger"
    assert kwargs == {"prefix": prefix, "pattern": "*.jsonl", "ready_marker": None, "poll_s": POLL_S}
    second = ArrivalTrigger(**kwargs)
    second.asset_state_store = ledger  # type: ignore[assignment]

    async def after_restart(events: list[dict[str, Any]]) -> None:
        await asyncio.sleep(POLL_S * 6)
        assert events == [], "a seen at the same version: not announced again"
        put(b)
        await _until(lambda: len(events) >= 1)

    assert [e["uri"] for e in asyncio.run(_watch(second, after_restart))] == [b]
    assert len(ledger.entries) == 2
