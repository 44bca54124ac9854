"""The log lines a process writes with ``TRUNKLINE_LOG_JSON``, read back as JSON."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from trunkline.kit.logging import configure

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "py.warnings")
"""The loggers ``configure`` sets up, restored afterwards."""


@contextlib.contextmanager
def json_log_lines(
    before: Callable[[], object] = lambda: None,
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Logs configured as JSON lines (``before`` runs first) within the block, which writes to
    a standard error of its own; what it yields returns every line written there so far, each
    parsed (one that is not JSON fails the test). The logging configuration is as it was
    afterwards."""
    saved = [
        (logger, list(logger.handlers), logger.level, logger.propagate)
        for logger in map(logging.getLogger, _LOGGERS)
    ]
    hooks = sys.excepthook, threading.excepthook
    written = io.StringIO()
    try:
        with contextlib.redirect_stderr(written):
            before()
            configure("INFO", json_lines=True)
            yield lambda: [json.loads(line) for line in written.getvalue().splitlines()]
    finally:
        sys.excepthook, threading.excepthook = hooks
        logging.captureWarnings(False)
        for logger, handlers, level, propagate in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
