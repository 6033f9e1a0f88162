"""``input.template``: a prompt made from a row's columns by a sandboxed, bounded Jinja template.

Jinja's immutable sandbox refuses Python internals (``__class__``, ``mro``, unsafe callables) and in-place
changes; the environment has no loader, so ``include``/``import`` reach no file, and nothing in it opens a
socket. On top of the sandbox each render is bounded: every call, attribute or item lookup, filter and
``range`` step checks a time budget, ``range`` and ``*``/``**`` are capped, and a filter or the output that
grows past :data:`MAX_RENDER_CHARS` stops the render. A column the template names that the row lacks is
:class:`TemplateFieldMissing`; any other failure is :class:`TemplateFailed`; both name the row's problem.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

MAX_RENDER_CHARS = 1_000_000
"""Output (and any one filter result) longer than this stops a render: prompts are far shorter."""
MAX_RANGE = 100_000
"""``range`` steps one render may take in all."""
RENDER_SECONDS = 1.0
"""A render's time budget (a template that loops longer is a bug or an attack, not a prompt)."""
_MAX_EXPONENT = 64


class TemplateFieldMissing(ValueError):
    """A row lacks a column the template names."""


class TemplateFailed(ValueError):
    """A template could not render one row (a sandbox refusal, a bound, an error in the template)."""


class _Budget(threading.local):
    deadline = 0.0
    range_left = 0

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateFailed(f"the template ran over its {RENDER_SECONDS:g} s budget for this row")


_BUDGET = _Budget()


def _sized(value: Any) -> Any:
    if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_RENDER_CHARS:
        raise TemplateFailed(f"the template built a value of {len(value):,} items or characters, over the "
                             f"{MAX_RENDER_CHARS:,} bound")
    return value


def _bounded_range(*args: int) -> Iterator[int]:
    for value in range(*args):
        _BUDGET.range_left -= 1
        if _BUDGET.range_left < 0:
            raise TemplateFailed(f"the template's range() loops ran over {MAX_RANGE:,} steps")
        _BUDGET.check()
        yield value


def _bounded_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _BUDGET.check()
        return _sized(fn(*args, **kwargs))

    return wrapper


@functools.cache
def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
            _BUDGET.check()
            if any(isinstance(a, int) and abs(a) > MAX_RENDER_CHARS for a in (*args, *kwargs.values())):
                raise TemplateFailed(f"a call in the template got a number over {MAX_RENDER_CHARS:,}")
            return _sized(super().call(__context, __obj, *args, **kwargs))

        def getattr(self, obj: Any, attribute: str) -> Any:
            _BUDGET.check()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _BUDGET.check()
            return super().getitem(obj, argument)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _BUDGET.check()
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
                raise TemplateFailed(f"an exponent of {right} in the template is over {_MAX_EXPONENT}")
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                            and len(seq) * times > MAX_RENDER_CHARS:
                        raise TemplateFailed(f"the template repeats a value to over {MAX_RENDER_CHARS:,} items")
            return super().call_binop(context, operator, left, right)

    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
    env.globals = {"range": _bounded_range}  # no lipsum, cycler, joiner, namespace, dict: nothing a prompt needs
    return env


class PromptTemplate:
    """A compiled template and the top-level names it reads (the columns a row must have)."""

    def __init__(self, source: str) -> None:
        from jinja2 import TemplateSyntaxError, meta

        env = _environment()
        try:
            ast = env.parse(source)
            self.fields = tuple(sorted(meta.find_undeclared_variables(ast) - set(env.globals)))
            self._template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise ValueError(f"input.template is not a valid Jinja template: {exc.message} (template line "
                             f"{exc.lineno}); fix the template") from None

    def render_row(self, row: Mapping[str, Any]) -> str:
        """The prompt for ``row``; TemplateFieldMissing or TemplateFailed say why there is none."""
        from jinja2 import TemplateError, UndefinedError
        from jinja2.exceptions import SecurityError

        missing = [name for name in self.fields if row.get(name) is None]
        if missing:
            raise TemplateFieldMissing(
                f"the template uses {', '.join(map(repr, missing))}, which this row does not have (or is null); "
                f"add the column{'s' if len(missing) > 1 else ''} to the row, or change input.template "
                f"(it reads {', '.join(self.fields)})")
        _BUDGET.deadline = time.monotonic() + RENDER_SECONDS
        _BUDGET.range_left = MAX_RANGE
        out: list[str] = []
        size = 0
        try:
            for chunk in self._template.generate(dict(row)):
                size += len(chunk)
                if size > MAX_RENDER_CHARS:
                    raise TemplateFailed(f"the template renders over {MAX_RENDER_CHARS:,} characters for this row")
                out.append(chunk)
        except UndefinedError as exc:
            raise TemplateFieldMissing(f"the template reads a field this row does not have: {exc.message}; add it "
                                       "to the row, or guard it in the template ({% if ... is defined %})") from None
        except SecurityError as exc:
            raise TemplateFailed(f"the template did something the sandbox refuses: {exc}") from None
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
            if isinstance(exc, TemplateFailed):
                raise
            raise TemplateFailed(f"the template failed on this row: {type(exc).__name__}: {exc}") from None
        return "".join(out)


@functools.lru_cache(maxsize=8)
def compiled_template(source: str) -> PromptTemplate:
    """The template compiled once per process (every row of a run renders the same one)."""
    return PromptTemplate(source)
