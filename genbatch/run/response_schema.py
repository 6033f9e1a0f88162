"""``generation.response_schema``: a JSON Schema subset compiled to a character automaton for constrained decoding.

The subset: ``object`` (``properties``, written in the order given, every one of them), ``string``
(``minLength``/``maxLength``, no escapes), ``number``/``integer``, ``boolean``, ``enum`` (strings, numbers,
booleans) and ``array`` (``items``, ``minItems``/``maxItems``). Output is compact canonical JSON (``", "`` and
``": "`` separators). A state is an immutable stack of (node, data) frames, so the worker can try a token on a
state without copying anything. :meth:`ResponseSchema.min_close` is the fewest characters that finish a state,
which lets the worker refuse any token after which the JSON could not be closed within ``max_new_tokens``:
every output ends complete, whatever the model would rather write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

DEFAULT_MAX_STRING = 64
"""A string without ``maxLength`` holds at most this many characters (the budget still applies)."""
DEFAULT_MAX_ITEMS = 8
MAX_NUMBER_DIGITS = 15
_KEYWORDS = {
    "object": {"type", "properties", "required", "additionalProperties", "title", "description"},
    "string": {"type", "minLength", "maxLength", "title", "description"},
    "number": {"type", "title", "description"},
    "integer": {"type", "title", "description"},
    "boolean": {"type", "title", "description"},
    "enum": {"enum", "type", "title", "description"},
    "array": {"type", "items", "minItems", "maxItems", "title", "description"},
}

State = tuple[tuple["_Node", Any], ...]


class _Node:
    """One schema node: how it consumes characters (``feed``) and how few it needs to finish."""

    def min_chars(self) -> int:
        raise NotImplementedError

    def start(self) -> Any:
        raise NotImplementedError

    def feed(self, data: Any, ch: str) -> tuple[str, Any, _Node | None] | None:
        """``("ok", data)``: consumed; ``("done",)``: consumed and finished; ``("push", data, child)``: the
        frame moves to ``data`` and ``child`` takes the character; ``("end",)``: finished without it; None: no."""
        raise NotImplementedError

    def min_rest(self, data: Any) -> int:
        raise NotImplementedError

    def can_end(self, data: Any) -> bool:
        return False


@dataclass(frozen=True, eq=False)
class _Lit(_Node):
    text: str

    def min_chars(self) -> int:
        return len(self.text)

    def start(self) -> Any:
        return 0

    def feed(self, data: Any, ch: str) -> Any:
        if ch != self.text[data]:
            return None
        return ("done", None, None) if data + 1 == len(self.text) else ("ok", data + 1, None)

    def min_rest(self, data: Any) -> int:
        return len(self.text) - data


@dataclass(frozen=True, eq=False)
class _Str(_Node):
    min_len: int
    max_len: int

    def min_chars(self) -> int:
        return 2 + self.min_len

    def start(self) -> Any:
        return -1  # before the opening quote

    def feed(self, data: Any, ch: str) -> Any:
        if data == -1:
            return ("ok", 0, None) if ch == '"' else None
        if ch == '"':
            return ("done", None, None) if data >= self.min_len else None
        if data < self.max_len and ch != "\\" and ch.isprintable():
            return ("ok", data + 1, None)
        return None

    def min_rest(self, data: Any) -> int:
        return 2 + self.min_len if data == -1 else max(0, self.min_len - data) + 1


@dataclass(frozen=True, eq=False)
class _Num(_Node):
    integer: bool

    def min_chars(self) -> int:
        return 1

    def start(self) -> Any:
        return ("sign", 0)

    def feed(self, data: Any, ch: str) -> Any:
        phase, digits = data
        if phase == "sign":
            if ch == "-":
                return ("ok", ("first", 0), None)
            phase = "first"
        if phase == "first":
            return ("ok", ("zero" if ch == "0" else "int", 1), None) if ch.isdigit() else None
        if phase in ("int", "zero") and ch.isdigit() and phase == "int" and digits < MAX_NUMBER_DIGITS:
            return ("ok", ("int", digits + 1), None)
        if phase in ("int", "zero") and ch == "." and not self.integer:
            return ("ok", ("point", digits), None)
        if phase == "point":
            return ("ok", ("frac", digits + 1), None) if ch.isdigit() and digits < MAX_NUMBER_DIGITS else None
        if phase == "frac" and ch.isdigit() and digits < MAX_NUMBER_DIGITS:
            return ("ok", ("frac", digits + 1), None)
        return ("end", None, None) if self.can_end(data) else None

    def min_rest(self, data: Any) -> int:
        return 0 if self.can_end(data) else 1

    def can_end(self, data: Any) -> bool:
        return bool(data[0] in ("int", "zero", "frac"))


@dataclass(frozen=True, eq=False)
class _Enum(_Node):
    options: tuple[str, ...]  # each option as its JSON text

    def min_chars(self) -> int:
        return min(len(o) for o in self.options)

    def start(self) -> Any:
        return ""

    def feed(self, data: Any, ch: str) -> Any:
        grown = data + ch
        longer = [o for o in self.options if o.startswith(grown)]
        if longer:
            return ("done", None, None) if longer == [grown] else ("ok", grown, None)
        return ("end", None, None) if data in self.options else None

    def min_rest(self, data: Any) -> int:
        return min(len(o) - len(data) for o in self.options if o.startswith(data))

    def can_end(self, data: Any) -> bool:
        return data in self.options


@dataclass(frozen=True, eq=False)
class _Seq(_Node):
    parts: tuple[_Node, ...]  # an object: literals ('{"key": ', ', "next": ', '}') between its values

    def min_chars(self) -> int:
        return sum(p.min_chars() for p in self.parts)

    def start(self) -> Any:
        return 0

    def feed(self, data: Any, ch: str) -> Any:
        return ("push", data + 1, self.parts[data]) if data < len(self.parts) else ("end", None, None)

    def min_rest(self, data: Any) -> int:
        return sum(p.min_chars() for p in self.parts[data:])

    def can_end(self, data: Any) -> bool:
        return bool(data == len(self.parts))


@dataclass(frozen=True, eq=False)
class _Arr(_Node):
    item: _Node
    min_items: int
    max_items: int

    def min_chars(self) -> int:
        return 2 + self.min_items * self.item.min_chars() + 2 * max(0, self.min_items - 1)

    def start(self) -> Any:
        return ("open", 0)

    def feed(self, data: Any, ch: str) -> Any:
        phase, count = data
        if phase == "open":
            return ("ok", ("first", 0), None) if ch == "[" else None
        if phase == "first":
            if ch == "]":
                return ("done", None, None) if self.min_items == 0 else None
            return ("push", ("after", 1), self.item)
        if phase == "after":
            if ch == "," and count < self.max_items:
                return ("ok", ("space", count), None)
            return ("done", None, None) if ch == "]" and count >= self.min_items else None
        if phase == "space":
            return ("ok", ("item", count), None) if ch == " " else None
        return ("push", ("after", count + 1), self.item)  # phase "item"

    def min_rest(self, data: Any) -> int:
        phase, count = data
        each = self.item.min_chars()
        if phase == "open":
            return self.min_chars()
        if phase == "first":
            return 1 if self.min_items == 0 else self.min_items * each + 2 * (self.min_items - 1) + 1
        more = max(0, self.min_items - count)
        if phase == "after":
            return more * (2 + each) + 1
        return 1 + each + max(0, more - 1) * (2 + each) + (1 if phase == "space" else 0)


class ResponseSchemaError(ValueError):
    """A response_schema outside the supported subset (the message names the path and the keyword)."""


def _compile(schema: Any, path: str) -> _Node:
    if not isinstance(schema, Mapping):
        raise ResponseSchemaError(f"{path} must be a JSON Schema object, got {type(schema).__name__}")
    kind = "enum" if "enum" in schema else schema.get("type")
    if kind not in _KEYWORDS:
        raise ResponseSchemaError(f"{path}: type {schema.get('type')!r} is not supported; use one of object, string, "
                                  "number, integer, boolean, array, or enum")
    unknown = sorted(set(schema) - _KEYWORDS[kind])
    if unknown:
        raise ResponseSchemaError(f"{path}: keyword(s) {', '.join(unknown)} are not supported for {kind}; the subset is "
                                  "documented in docs/inputs.md")
    if kind == "enum":
        values = schema["enum"]
        if not isinstance(values, list) or not values or not all(
                isinstance(v, (str, int, float, bool)) for v in values):
            raise ResponseSchemaError(f"{path}.enum must be a non-empty list of strings, numbers or booleans")
        return _Enum(tuple(json.dumps(v, ensure_ascii=False) for v in values))
    if kind == "boolean":
        return _Enum(("true", "false"))
    if kind in ("number", "integer"):
        return _Num(integer=kind == "integer")
    if kind == "string":
        low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", DEFAULT_MAX_STRING))
        if not 0 <= low <= high:
            raise ResponseSchemaError(f"{path}: minLength {low} and maxLength {high} must satisfy 0 <= min <= max")
        return _Str(low, high)
    if kind == "array":
        low, high = int(schema.get("minItems", 0)), int(schema.get("maxItems", DEFAULT_MAX_ITEMS))
        if not 0 <= low <= high or high < 1:
            raise ResponseSchemaError(f"{path}: minItems {low} and maxItems {high} must satisfy 0 <= min <= max, max >= 1")
        if "items" not in schema:
            raise ResponseSchemaError(f"{path}: an array needs items (the schema of each element)")
        return _Arr(_compile(schema["items"], f"{path}.items"), low, high)
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        raise ResponseSchemaError(f"{path}: an object needs properties (every one is written, in this order)")
    if schema.get("additionalProperties", False) is not False:
        raise ResponseSchemaError(f"{path}: additionalProperties must be false (only the listed properties are written)")
    required = schema.get("required", list(props))
    if not isinstance(required, list) or set(required) - set(props):
        raise ResponseSchemaError(f"{path}.required must list properties of the object")
    parts: list[_Node] = []
    for i, (key, sub) in enumerate(props.items()):
        lead = "{" if i == 0 else ", "
        parts += [_Lit(f"{lead}{json.dumps(str(key), ensure_ascii=False)}: "), _compile(sub, f"{path}.{key}")]
    parts.append(_Lit("}"))
    return _Seq(tuple(parts))


class ResponseSchema:
    """A compiled schema: feed characters to states, ask whether a state is complete and how far from it."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = dict(schema)
        self.root = _compile(schema, "generation.response_schema")

    @cached_property
    def start(self) -> State:
        """The state before any character."""
        return ((self.root, self.root.start()),)

    def min_chars(self) -> int:
        """Characters of the shortest JSON the schema allows."""
        return self.root.min_chars()

    def step(self, state: State, ch: str) -> State | None:
        """The state after ``ch``, or None when ``ch`` cannot come next."""
        stack = list(state)
        while stack:
            node, data = stack[-1]
            res = node.feed(data, ch)
            if res is None:
                return None
            action = res[0]
            if action == "ok":
                stack[-1] = (node, res[1])
                return tuple(stack)
            if action == "done":
                stack.pop()
                return tuple(_pop_finished(stack))
            if action == "push":
                stack[-1] = (node, res[1])
                child = res[2]
                assert child is not None
                stack.append((child, child.start()))
                continue
            stack.pop()  # "end": finished without ch; the frame below takes it
        return None  # the JSON is complete: nothing may follow

    def feed(self, state: State | None, text: str) -> State | None:
        """The state after every character of ``text`` (None as soon as one cannot come next)."""
        for ch in text:
            if state is None:
                return None
            state = self.step(state, ch)
        return state

    @staticmethod
    def complete(state: State) -> bool:
        """Whether the text so far is a whole JSON value of the schema."""
        return all(node.can_end(data) for node, data in state)

    @staticmethod
    def min_close(state: State) -> int:
        """The fewest characters that complete ``state``."""
        return sum(node.min_rest(data) for node, data in state)

    def literal_chars(self) -> set[str]:
        """Every character the schema itself writes (structure, keys, enum values): each must be one token."""
        chars: set[str] = set(',: []"-.0123456789')
        stack: list[_Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Lit):
                chars |= set(node.text)
            elif isinstance(node, _Enum):
                chars |= set("".join(node.options))
            elif isinstance(node, _Seq):
                stack += node.parts
            elif isinstance(node, _Arr):
                stack.append(node.item)
        return chars


def _pop_finished(stack: list[tuple[_Node, Any]]) -> list[tuple[_Node, Any]]:
    """Frames that a child's end finished too (an object after its closing brace's literal) leave the stack."""
    while stack:
        node, data = stack[-1]
        if isinstance(node, _Seq) and data == len(node.parts):
            stack.pop()
            continue
        break
    return stack


def compile_schema(schema: Mapping[str, Any]) -> ResponseSchema:
    """The compiled schema; ResponseSchemaError names what is outside the subset."""
    return ResponseSchema(schema)
