"""genbatch.io.show quotes a bad value in one short, escaped line, whichever rule names it."""

from __future__ import annotations

import sys

from genbatch.io.input_rows import RawRow
from genbatch.io.show import SHOW_LIMIT, show, show_kind
from genbatch.run.row_shape import RowShape, shape_row


def test_hostile_values_come_out_short_and_escaped() -> None:
    assert "..." in show("x" * 10**6) and len(show("x" * 10**6)) <= SHOW_LIMIT
    assert show("evil\u202eexe.txt") == "'evil\\u202eexe.txt'"  # a bidi override cannot reorder the line
    assert "\n" not in show("two\nlines") and "\x00" not in show("nul\x00")
    digits = sys.get_int_max_str_digits()
    assert show(10 ** (digits + 10)).startswith("<integer of ")  # too large for str(): its size instead
    assert show([[[[1]]]]) == "[[[...]]]" and len(show(dict.fromkeys(range(100)))) <= SHOW_LIMIT
    assert show_kind(None) == "nothing" and show_kind(["a"]) == "list ['a']"


def test_row_shape_names_a_bad_value_the_same_way() -> None:
    row = RawRow(index=0, row={"id": "a", "messages": "evil\u202e" + "x" * 500}, line=1, source="in.jsonl")
    shaped = shape_row(row, RowShape())
    assert shaped.shape_problem is not None and shaped.shape_problem[0] == "messages_invalid"
    reason = shaped.shape_problem[1]
    assert "\u202e" not in reason and "\\u202e" in reason and len(reason) < 300
