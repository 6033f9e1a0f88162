"""How a bad input value is quoted in a reject's reason or an error: short, one line, escaped.

One helper for every rule that names a value (``genbatch.quality.expectations``, ``genbatch.run.row_shape``),
so a value reads the same whichever rule refused it, and a hostile one (a megabyte string, control or bidi
characters, an int too large for ``str``) cannot flood or garble the line that names it.
"""

from __future__ import annotations

import reprlib
from typing import Any

SHOW_LIMIT = 80
_REPR = reprlib.Repr()
_REPR.maxstring = 70
_REPR.maxother = 70
_REPR.maxdict = 4
_REPR.maxlist = 4
_REPR.maxlevel = 2


def show(value: Any) -> str:
    """A short, escaped repr of a bad value: control and bidi characters come out as escapes."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too large for str(); say how large instead
        text = f"<integer of {value.bit_length()} bits>"
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 3] + "..."


def show_kind(value: Any) -> str:
    """The value's Python type and ``show`` of it, or ``nothing`` for a missing (None) value."""
    return "nothing" if value is None else f"{type(value).__name__} {show(value)}"
