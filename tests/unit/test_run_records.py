"""The row key of reject records: ``row_index``, and the legacy ``index`` of contract version 1 runs."""

from __future__ import annotations

import pytest

from genbatch.ops.retention import reject_skeleton
from genbatch.run.records import reject_row_index


def test_a_reject_record_is_read_by_its_row_index() -> None:
    assert reject_row_index({"id": "a", "rule": "id_unsafe", "row_index": 7}) == 7


def test_a_legacy_reject_record_is_read_by_its_index() -> None:
    assert reject_row_index({"index": 4, "rule": "erased", "erasure_id": "e1"}) == 4


def test_row_index_wins_over_a_legacy_index() -> None:
    assert reject_row_index({"row_index": 2, "index": 9}) == 2


def test_a_record_without_either_key_is_an_error() -> None:
    with pytest.raises(KeyError):
        reject_row_index({"rule": "id_unsafe"})


def test_retention_strips_a_legacy_reject_to_row_index() -> None:
    legacy = {"id": "a", "index": 3, "reason": "why", "rule": "id_unsafe", "row": {"id": "a", "prompt": "p"}}
    assert reject_skeleton(legacy) == {"row_index": 3, "rule": "id_unsafe"}
    assert reject_skeleton(reject_skeleton(legacy)) == {"row_index": 3, "rule": "id_unsafe"}  # idempotent
