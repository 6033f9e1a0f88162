"""Turn a row as users bring it into the contract's row: ``id``, ``prompt`` or chat ``messages``, ``params``, ``seed``.

Three shapes: a row that carries ``prompt`` (kept as it is), a row of columns rendered through
``input.template`` (a sandboxed Jinja template, :mod:`genbatch.run.prompt_template`), and an OpenAI Batch
request line (``input.format: openai_batch``). Chat ``messages`` (from the row or the request body) get the
spec's ``system_prompt`` first and a ``prompt`` that joins their contents, which the row rules, token
estimates and dedupe read; the worker renders the messages with the model's own chat template.
A row that cannot be shaped keeps its columns and carries a rule and a reason, so validation rejects it
like any other bad row (:mod:`genbatch.quality.expectations`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from genbatch.io.input_rows import RawRow
from genbatch.io.show import show_kind
from genbatch.run.prompt_template import TemplateFailed, TemplateFieldMissing, compiled_template

SHAPE_RULES: tuple[str, ...] = (
    "openai_request_invalid",
    "openai_field_unsupported",
    "template_field_missing",
    "template_failed",
    "messages_invalid",
    "chat_template_missing",
)
"""Rules of this step, in the order validation applies them (right after ``parse_error``)."""

OPENAI_URLS = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}
"""The OpenAI Batch endpoints genbatch serves, and the body field each one reads."""
_OPENAI_LINE_KEYS = ("custom_id", "method", "url", "body")
# body field -> params key (None: handled on its own)
_OPENAI_BODY_KEYS: dict[str, str | None] = {
    "model": None, "messages": None, "prompt": None, "seed": None, "n": None, "stream": None,
    "max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature", "top_p": "top_p",
}
CHAT_ROLES = ("system", "developer", "user", "assistant")
_MESSAGE_KEYS = ("role", "content")
OPENAI_META = "openai_request"
"""The metadata column that keeps a request's ``url`` and ``model`` for the OpenAI-shaped output."""


@dataclass(frozen=True)
class RowShape:
    """What the spec says about the rows' shape (``input.format``, ``input.template``, ``input.system_prompt``)."""

    openai_batch: bool = False
    template: str | None = None
    system_prompt: str | None = None
    chat_template: bool = True  # whether the pinned model has a chat template (False: chat rows are rejected)

    @property
    def active(self) -> bool:
        """Whether rows are reshaped at all (a plain-prompt run pays nothing)."""
        return self.openai_batch or self.template is not None or self.system_prompt is not None

    @classmethod
    def of(cls, spec_input: Any, *, chat_template: bool = True) -> RowShape:
        """The shape of a spec's ``input`` section (a :class:`genbatch.run.spec.InputSpec`)."""
        return cls(openai_batch=spec_input.format == "openai_batch", template=spec_input.template,
                   system_prompt=spec_input.system_prompt, chat_template=chat_template)


class _Unshapeable(Exception):
    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


def shape_rows(rows: Iterable[RawRow], shape: RowShape) -> Iterator[RawRow]:
    """Each row in the contract's shape, or as read with ``shape_problem`` (rule, reason) set."""
    for raw in rows:
        yield shape_row(raw, shape)


def shape_row(raw: RawRow, shape: RowShape) -> RawRow:
    """One row in the contract's shape (see the module docstring); unparsed rows pass through."""
    if not isinstance(raw.row, dict) or raw.parse_error is not None:
        return raw
    row = raw.row
    has_messages = "messages" in row and row["messages"] is not None
    if not (shape.active or has_messages):
        return raw
    try:
        shaped = _openai_row(row) if shape.openai_batch else dict(row)
        if shape.template is not None:
            shaped["prompt"] = compiled_template(shape.template).render_row(shaped)
        completion = shape.openai_batch and shaped[OPENAI_META]["url"] == "/v1/completions"  # raw text, no turns
        if "messages" in shaped or (shape.system_prompt is not None and not completion):
            shaped = _chat_row(shaped, shape)
    except _Unshapeable as exc:
        return dataclasses.replace(raw, shape_problem=(exc.rule, exc.reason))
    except TemplateFieldMissing as exc:
        return dataclasses.replace(raw, shape_problem=("template_field_missing", str(exc)))
    except TemplateFailed as exc:
        return dataclasses.replace(raw, shape_problem=("template_failed", str(exc)))
    return dataclasses.replace(raw, row=shaped)


# --- chat messages ----------------------------------------------------------------------------


def _chat_row(row: dict[str, Any], shape: RowShape) -> dict[str, Any]:
    """``messages`` checked and led by the system prompt, ``prompt`` their joined contents."""
    messages = row.get("messages")
    if messages is None:  # a system prompt over plain rows: the row's prompt is the user turn
        prompt = row.get("prompt")
        if not isinstance(prompt, str):
            return row  # the prompt rules name what is wrong with it
        messages = [{"role": "user", "content": prompt}]
    messages = _checked_messages(messages)
    if shape.system_prompt is not None and not any(m["role"] in ("system", "developer") for m in messages):
        messages = [{"role": "system", "content": shape.system_prompt}, *messages]
    if not shape.chat_template:
        raise _Unshapeable("chat_template_missing", "this row is chat input (messages), but the run's model has no "
                           "chat template; give a prompt instead, or use a model version that has one")
    return {**row, "messages": messages, "prompt": "\n".join(m["content"] for m in messages)}


def _checked_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _Unshapeable("messages_invalid", f"messages must be a non-empty list of {{role, content}} objects, got "
                           f"{show_kind(messages)}; e.g. [{{\"role\": \"user\", \"content\": \"...\"}}]")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _Unshapeable("messages_invalid", f"{where} must be an object with role and content, got "
                               f"{show_kind(message)}")
        extra = sorted(str(k) for k in message if k not in _MESSAGE_KEYS)
        if extra:
            raise _Unshapeable("openai_field_unsupported", f"{where} has field(s) genbatch does not support: "
                               f"{', '.join(extra)}; keep role and content only")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise _Unshapeable("messages_invalid", f"{where}.role is {role!r}; use one of {', '.join(CHAT_ROLES)}")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": _content_text(message.get("content"), where)})
    if not any(m["role"] == "user" for m in out):
        raise _Unshapeable("messages_invalid", "messages hold no user message; add one with role 'user'")
    return out


def _content_text(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts (joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                if isinstance(kind, str):
                    raise _Unshapeable("openai_field_unsupported", f"{where}.content[{j}] is of type {kind!r}; "
                                       "genbatch's text models read text parts only")
                raise _Unshapeable("messages_invalid", f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": "
                                   f"\"...\"}}, got {show_kind(part)}")
            texts.append(part["text"])
        return "".join(texts)
    raise _Unshapeable("messages_invalid", f"{where}.content must be a string, got {show_kind(content)}")


# --- OpenAI Batch request lines ---------------------------------------------------------------


def _openai_row(line: dict[str, Any]) -> dict[str, Any]:
    """A request line as a contract row: ``custom_id`` → id, the body's messages/prompt, sampling → params."""
    extra = sorted(str(k) for k in line if k not in _OPENAI_LINE_KEYS)
    if extra:
        raise _Unshapeable("openai_field_unsupported", f"request line has field(s) genbatch does not support: "
                           f"{', '.join(extra)}; a line holds custom_id, method, url and body only")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _Unshapeable("openai_request_invalid", f"custom_id must be a non-empty string, got {show_kind(custom_id)}")
    if line.get("method") != "POST":
        raise _Unshapeable("openai_request_invalid", f"method must be 'POST', got {line.get('method')!r}")
    url = line.get("url")
    if url not in OPENAI_URLS:
        raise _Unshapeable("openai_request_invalid", f"url {url!r} is not served; use one of {', '.join(OPENAI_URLS)}")
    body = line.get("body")
    if not isinstance(body, Mapping):
        raise _Unshapeable("openai_request_invalid", f"body must be an object, got {show_kind(body)}")
    unsupported = sorted(str(k) for k in body if k not in _OPENAI_BODY_KEYS)
    if unsupported:
        raise _Unshapeable("openai_field_unsupported", f"body has field(s) genbatch does not support: "
                           f"{', '.join(unsupported)}; remove them (supported: {', '.join(_OPENAI_BODY_KEYS)})")
    if body.get("n", 1) != 1:
        raise _Unshapeable("openai_field_unsupported", f"body.n is {body.get('n')!r}; genbatch writes one completion "
                           "per request: use n 1 (or send the request n times with different custom_ids)")
    if body.get("stream", False) is not False:
        raise _Unshapeable("openai_field_unsupported", "body.stream must be false: a batch is not streamed")
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise _Unshapeable("openai_request_invalid", "body has both max_tokens and max_completion_tokens; keep one")
    field = OPENAI_URLS[str(url)]
    other = "prompt" if field == "messages" else "messages"
    if field not in body:
        raise _Unshapeable("openai_request_invalid", f"body.{field} is missing: {url} reads {field}")
    if other in body:
        raise _Unshapeable("openai_request_invalid", f"body.{other} is not read by {url}; send it to "
                           f"{next(u for u, f in OPENAI_URLS.items() if f == other)}")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    row: dict[str, Any] = {"id": custom_id, field: body[field],
                           OPENAI_META: {"url": url, "model": body.get("model"), "max_tokens": max_tokens}}
    params = {param: body[key] for key, param in _OPENAI_BODY_KEYS.items() if param is not None and key in body}
    if params:
        row["params"] = params
    if "seed" in body:
        row["seed"] = body["seed"]
    return row
