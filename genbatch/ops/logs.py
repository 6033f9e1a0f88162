"""Log set-up for the worker and the ``genbatch`` CLI: classic text lines or one JSON object per line.

    GENBATCH_LOG_FORMAT=json   one JSON object per line (the worker pod's default, see operators/pod_spec.py)
    GENBATCH_LOG_FORMAT=text   "time level logger: message" lines (the default elsewhere)
    GENBATCH_LOG_LEVEL=DEBUG   the level (default: INFO for the worker, WARNING for the CLI)

JSON lines carry ``timestamp``, ``severity``, ``logger`` and ``message``, the context bound with :func:`bind`
and the ``extra=`` fields; modules keep using ``logging.getLogger(__name__)``. The values of secret-looking
environment variables are replaced by ``***`` in both formats.

Fields, JSON-mode output of other libraries, redaction: docs/internals.md#genbatchopslogs
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import IO, Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from genbatch.stages.generate import SECRET_WORDS

FORMAT_ENV = "GENBATCH_LOG_FORMAT"
LEVEL_ENV = "GENBATCH_LOG_LEVEL"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Environment variable names whose values are secrets: the names genbatch.stages.generate keeps from the
# worker, and more (the alert webhook URL carries its own token).
SECRET_NAME_WORDS = (*SECRET_WORDS, "PRIVATE_KEY", "WEBHOOK", "FERNET", "SQL_ALCHEMY_CONN")
MIN_SECRET_LEN = 6  # shorter values ("1", "true") would blank out ordinary words
REDACTED = "***"
_HANDLER_FLAG = "_genbatch_handler"
# In JSON mode: nothing but JSON lines on stderr (set only where the environment does not say otherwise).
JSON_MODE_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
                 "DIFFUSERS_VERBOSITY": "error"}


# --------------------------------------------------------------------------- secrets


def secret_values(env: dict[str, str] | None = None) -> list[str]:
    """Values of secret-looking variables in ``env`` (default: this process's), longest first."""
    env = dict(os.environ) if env is None else env
    found = {v for k, v in env.items()
             if len(v) >= MIN_SECRET_LEN and any(word in k.upper() for word in SECRET_NAME_WORDS)}
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v, secrets) for v in value]
    return value


def _redact_processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    secrets = secret_values()
    return {k: _redact_value(v, secrets) for k, v in event_dict.items()} if secrets else event_dict


FIRST_KEYS = ("timestamp", "severity", "logger", "message", "run_id", "shard", "rank")


def _order(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The fixed fields first, so a line reads well in a terminal too."""
    first = {k: event_dict[k] for k in FIRST_KEYS if k in event_dict}
    return {**first, **{k: v for k, v in event_dict.items() if k not in first}}


def _severity(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    event_dict["severity"] = record.levelname if record is not None else method_name.upper()
    return event_dict


# --------------------------------------------------------------------------- formatters


class RedactingTextFormatter(logging.Formatter):
    """The classic text line, with secret values replaced."""

    def format(self, record: logging.LogRecord) -> str:
        """The standard text line, then :func:`redact` so secret environment values never reach it."""
        return redact(super().format(record))


def json_formatter() -> logging.Formatter:
    """One JSON object per record: timestamp, severity, logger, message, bound context and extras."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            _severity,
            structlog.stdlib.ExtraAdder(),
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _redact_processor,
            _order,
            structlog.processors.JSONRenderer(default=str, sort_keys=False),
        ],
    )


def log_format(value: str | None = None) -> str:
    """The format to use: ``value``, else $GENBATCH_LOG_FORMAT, else text."""
    fmt = (value or os.environ.get(FORMAT_ENV) or "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"{FORMAT_ENV}={fmt!r} is not a log format; use one of {', '.join(FORMATS)}")
    return fmt


def configure(*, default_level: int = logging.INFO, fmt: str | None = None, stream: IO[str] | None = None,
              text_format: str = TEXT_FORMAT, force: bool = False) -> logging.Handler | None:
    """Install the root handler, like ``logging.basicConfig``: a no-op when someone else already did.

    ``force`` replaces whatever handlers the root logger has. Returns the handler it installed.
    """
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, _HANDLER_FLAG, False)]
    if foreign and not force:
        return None
    for handler in list(root.handlers):
        root.removeHandler(handler)
    try:
        chosen = log_format(fmt)
        problem = None
    except ValueError as exc:
        chosen, problem = "text", str(exc)
    if chosen == "json":
        for key, value in JSON_MODE_ENV.items():
            os.environ.setdefault(key, value)
        logging.captureWarnings(True)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if chosen == "json" else RedactingTextFormatter(text_format))
    setattr(handler, _HANDLER_FLAG, True)
    root.addHandler(handler)
    level_name = os.environ.get(LEVEL_ENV, "").strip().upper()
    root.setLevel(logging.getLevelName(level_name) if level_name in logging.getLevelNamesMapping() else default_level)
    if problem:
        logging.getLogger(__name__).warning("%s; logging text lines", problem)
    return handler


def bind(**fields: Any) -> None:
    """Context for every later record of this thread/task (``run_id``, ``shard``, ``rank``)."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in fields.items() if v is not None})


def clear() -> None:
    """Drop the context bound with :func:`bind` (for this thread/task)."""
    structlog.contextvars.clear_contextvars()


def run_id_of(run_dir: str) -> str:
    """The run id is the last path segment of the run dir (``<output>/<run_id>``, genbatch.run.layout)."""
    return run_dir.rstrip("/").rsplit("/", 1)[-1]
