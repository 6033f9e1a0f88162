"""What a per-item ``params`` value may be: the bounds of the run spec's ``generation`` field it overrides.

A row's override replaces a run-wide setting, so it must obey that setting's bounds, or it crashes
preprocessing or generation later, runs silently with nonsense, or (NaN) ends as invalid JSON. The
checks are built from ``GenerationSpec.model_fields`` (type and ``ge``/``gt``/``le``/``lt``/``multiple_of``),
so the spec and the input contract cannot drift. They are strict: JSON input carries real numbers, so
strings (even ``"0.7"``), booleans, NaN, infinities, and floats for integer fields (``5.0``) are refused.
"""

from __future__ import annotations

import types
from collections.abc import Collection
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from genbatch.run.spec import GenerationSpec

__all__ = ["ParamBound", "param_bound", "param_bounds"]

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)
_KINDS: dict[Any, str] = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}


@dataclass(frozen=True)
class ParamBound:
    """One per-item key: its spec field's validator, and what that field allows, in words."""

    key: str
    adapter: TypeAdapter[Any]
    expected: str
    """E.g. ``a number within [0, 5]``: what the reason tells the user to write."""

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else ``must be <expected>`` (the violation the suite sees)."""
        try:
            self.adapter.validate_python(value)
        except ValidationError:
            return f"must be {self.expected}"
        return None


def param_bounds(keys: Collection[str], model: type[BaseModel] = GenerationSpec) -> dict[str, ParamBound]:
    """The bound of every key; a key with no spec field is refused, so no allowed key goes unchecked."""
    unbounded = sorted(set(keys) - set(model.model_fields))
    if unbounded:
        raise ValueError(
            f"per-item params key(s) {unbounded} have no field in {model.__name__} to bound their values; "
            f"allow only keys of the generation section ({', '.join(model.model_fields)})"
        )
    return {key: param_bound(key, model) for key in sorted(keys)}


@cache
def param_bound(key: str, model: type[BaseModel] = GenerationSpec) -> ParamBound:
    """The strict validator and description of ``model.key`` (cached: built once per process)."""
    field = model.model_fields[key]
    target: Any = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return ParamBound(key, TypeAdapter(target, config=_STRICT), _kind(field.annotation) + _range(field.metadata))


def _kind(annotation: Any) -> str:
    """``an integer``, ``a number``, ``an integer or 'auto'``...: the field's type in words."""
    if annotation in _KINDS:
        return _KINDS[annotation]
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(repr(arg) for arg in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_kind(arg) for arg in get_args(annotation) if arg is not type(None))
    return getattr(annotation, "__name__", str(annotation))


def _num(value: Any) -> str:
    """``5`` for 5.0: bounds read as the user would write them."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _range(metadata: list[Any]) -> str:
    """`` within [0, 5]``, `` within (0, 1]``, `` at least 1``, ``... and a multiple of 8``."""
    low = high = ""
    multiples: list[str] = []
    for item in metadata:
        if isinstance(item, at.Ge):
            low = f"[{_num(item.ge)}"
        elif isinstance(item, at.Gt):
            low = f"({_num(item.gt)}"
        elif isinstance(item, at.Le):
            high = f"{_num(item.le)}]"
        elif isinstance(item, at.Lt):
            high = f"{_num(item.lt)})"
        elif isinstance(item, at.MultipleOf):
            multiples.append(f"a multiple of {_num(item.multiple_of)}")
    text = _interval(low, high)
    return text + "".join(f" and {m}" for m in multiples)


def _interval(low: str, high: str) -> str:
    if low and high:
        return f" within {low}, {high}"
    if low:
        return f" {'at least' if low[0] == '[' else 'greater than'} {low[1:]}"
    if high:
        return f" {'at most' if high[-1] == ']' else 'less than'} {high[:-1]}"
    return ""
