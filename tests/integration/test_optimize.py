"""Quality of the optimised variants of catalog-copy v2 on the example rows (slow: real evaluation).

These are the figures the promotion gate relies on: a 95%-sparsity variant clearly loses quality (so the
gate must reject it), while int8, 50% structured pruning and the distilled student keep it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from models.optimize import distill, prune, quantize_int8
from models.zoo import CATALOG_COPY_DIR

pytestmark = pytest.mark.slow

PARENT = CATALOG_COPY_DIR / "v2"
ROWS = 100


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("structured", [True, False])
def test_95_percent_sparsity_clearly_loses_quality(tmp_path: Path, structured: bool) -> None:
    card = prune(PARENT, tmp_path / "p95", 0.95, structured=structured, eval_rows=ROWS)
    assert card["quality"]["parent"] >= 0.95
    assert card["quality"]["variant"] <= 0.2, card["quality"]
    assert card["quality"]["delta"] <= -0.75


def test_int8_and_half_structured_pruning_keep_quality(tmp_path: Path) -> None:
    int8 = quantize_int8(PARENT, tmp_path / "int8", eval_rows=ROWS)
    pruned = prune(PARENT, tmp_path / "p50", 0.5, structured=True, eval_rows=ROWS)
    assert int8["quality"]["variant"] >= 0.95, int8["quality"]
    assert pruned["quality"]["variant"] >= 0.9, pruned["quality"]
    assert int8["size"]["ratio"] < 0.5 and pruned["size"]["ratio"] < 0.75


def test_distilled_student_is_smaller_and_keeps_quality(tmp_path: Path) -> None:
    card = distill(PARENT, tmp_path / "student", steps=600, hidden_size=64, layers=2, eval_rows=ROWS)
    assert card["size"]["ratio"] < 0.35
    assert card["quality"]["variant"] >= 0.9, card
