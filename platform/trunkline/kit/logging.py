"""Structured logs that carry the request id, tenant and key id of the work in progress.

Context lives in a contextvar so every log line emitted while serving a request
carries it without passing it around. Secrets never go in here: only ids. Both formatters
leave out the row values PostgreSQL's error text names (:func:`without_row_values`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

_EMPTY: dict[str, str] = {}
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar(
    "trunkline_log_context", default=_EMPTY
)

T = TypeVar("T")

_STD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's message again, with terminal colour codes
}
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
"""uvicorn's loggers, which its default configuration gives a plain-text handler of its own
(``WARNING:  Invalid HTTP request received.``, a multi-line traceback): they go through the
root's handler instead, so every line a server writes has the format configured."""


def bind(**fields: str | None) -> contextvars.Token[dict[str, str]]:
    """Add fields to the log context of the current task; returns a token for ``reset``."""
    merged = dict(_context.get())
    merged.update({k: v for k, v in fields.items() if v is not None})
    return _context.set(merged)


def reset(token: contextvars.Token[dict[str, str]]) -> None:
    _context.reset(token)


def current() -> dict[str, str]:
    return _context.get()


class Carried(Generic[T]):
    """``items`` with ``fields`` in the log context of each step, wherever it is iterated: a
    streamed answer is relayed after its handler returned and reset the request's context."""

    def __init__(self, items: AsyncIterator[T], fields: dict[str, str]) -> None:
        self._items = items
        self._fields = fields

    def __aiter__(self) -> Carried[T]:
        return self

    async def __anext__(self) -> T:
        token = _context.set(self._fields)
        try:
            return await anext(self._items)
        finally:
            _context.reset(token)

    async def aclose(self) -> None:
        closing = getattr(self._items, "aclose", None)
        if closing is not None:
            token = _context.set(self._fields)
            try:
                await closing()
            finally:
                _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


_DETAIL = re.compile(
    # It ends before what follows an error's text: SQLAlchemy's, PostgreSQL's next fields, a
    # traceback (an error logged as the message), or the next error of a chain; not at any
    # blank line, which a value may hold.
    r"^DETAIL:.*?(?=\n\[SQL: |\n\(Background on this error|\nHINT: |\nCONTEXT: "
    r"|\nTraceback \(most recent call last\):|\n\n(?:The above exception|During handling)|\Z)",
    re.MULTILINE | re.DOTALL,
)
_ESCAPED_DETAIL = re.compile(
    # The same in an error's ``repr`` (Celery's line of a failed job: ``raised unexpected:
    # IntegrityError('…\\nDETAIL:  …')``), its newlines escaped, once or more (a repr within a
    # repr): it ends where the error's text does, at its closing quote.
    r"(?<=\\n)DETAIL:.*?(?=\\+n(?:\[SQL: |\(Background on this error|HINT: |CONTEXT: "
    r"|\\+n(?:The above exception|During handling))|\\*['\"](?:[),\]}]|$)|\Z)",
    re.MULTILINE | re.DOTALL,
)
_KEY_COLUMNS = re.compile(r"Key \((?P<columns>[^()\n]*)\)=")


def without_row_values(text: str) -> str:
    """``text`` with the ``DETAIL`` of every PostgreSQL error in it reduced to the columns it
    names: it carries the refused row's values (``Key (email)=(ann@example.com) already
    exists``, ``Failing row contains (…)``), which SQLAlchemy's ``hide_parameters`` does not
    hide, into every log line of an error logged whole (a job's, the configuration check's)."""
    if "DETAIL:" not in text:
        return text
    text = _DETAIL.sub(_detail_without_values, text)
    return _ESCAPED_DETAIL.sub(_detail_without_values, text)


def _values_left_out(value: object) -> object:
    """An extra field with :func:`without_row_values` applied to every text in it (Celery
    logs a failed job's error and traceback in a dict, ``data``)."""
    if isinstance(value, str):
        return without_row_values(value)
    if isinstance(value, dict):
        return {key: _values_left_out(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_values_left_out(item) for item in value]
    return value


def _detail_without_values(detail: re.Match[str]) -> str:
    key = _KEY_COLUMNS.search(detail.group(0))
    named = f"Key ({key['columns']})=… " if key else ""
    return f"DETAIL:  {named}(values left out of the logs)"


def _utc_instant(created: float) -> str:
    """RFC 3339 in UTC with milliseconds (``2026-12-06T16:17:22.123Z``): log collectors order
    and join lines from several hosts by it, which local time without an offset defeats."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _utc_instant(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": without_row_values(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                payload[key] = _values_left_out(value)
        if record.exc_info:
            payload["exc"] = without_row_values(self.formatException(record.exc_info))
        return json.dumps(payload, default=_shown)


def _shown(value: object) -> str:
    """A value JSON has no type for, as a log line shows it."""
    return without_row_values(str(value))


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Each part on its own: a DETAIL ending the traceback would run on over the fields.
        base = without_row_values(super().format(record))
        extras = [
            f"{key}={without_row_values(str(value))}"
            for key, value in vars(record).items()
            if key not in _STD_ATTRS and not key.startswith("_")
        ]
        return base + (" " + " ".join(extras) if extras else "")


def _uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """``sys.excepthook``: the error that stops the process, as a log line."""
    logging.getLogger("trunkline").critical(
        "uncaught error: the process stops", exc_info=(kind, error, traceback)
    )


def _uncaught_in_thread(uncaught: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: the error that ended a thread, as a log line naming it."""
    if uncaught.exc_type is SystemExit:
        return
    logging.getLogger("trunkline").critical(
        "uncaught error: a thread stopped",
        exc_info=uncaught.exc_value,  # its traceback with it
        extra={"thread_name": getattr(uncaught.thread, "name", None)},
    )


def configure(level: str = "INFO", *, json_lines: bool = False) -> None:
    """Install one handler on the root logger (idempotent), uvicorn's loggers and Python's
    warnings writing through it. A uvicorn server made afterwards must be given
    ``log_config=None``: its default configuration puts its own plain-text handler back."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else KeyValueFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_trunkline", False):
            root.removeHandler(existing)
    handler._trunkline = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python's warnings (a library's, e.g. Celery's as root) as log lines, not several lines
    # of plain text among them; with JSON lines, so is the traceback of an error that stops
    # the process or a thread.
    logging.captureWarnings(True)
    if json_lines:
        sys.excepthook, threading.excepthook = _uncaught, _uncaught_in_thread
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        for existing in list(server_logger.handlers):
            server_logger.removeHandler(existing)
        server_logger.propagate = True
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
