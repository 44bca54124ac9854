"""JSON log lines: what a log collector needs to order and join lines from several hosts."""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from datetime import UTC, datetime

import pytest

from support.json_logs import json_log_lines
from trunkline.apps.serving import server
from trunkline.kit.logging import JsonFormatter


def test_a_json_line_carries_a_utc_millisecond_instant_and_its_fields() -> None:
    record = logging.makeLogRecord(
        {"name": "trunkline.test", "levelname": "WARNING", "msg": "engine %s ejected",
         "args": ("e1",), "created": 1_796_574_000.0456, "endpoint": "e1"}
    )  # fmt: skip
    line = json.loads(JsonFormatter().format(record))
    assert line["ts"] == "2026-12-06T16:20:00.045Z"
    assert datetime.fromisoformat(line["ts"]) == datetime.fromtimestamp(1_796_574_000.045, UTC)
    assert (line["level"], line["logger"], line["msg"]) == (
        "warning",
        "trunkline.test",
        "engine e1 ejected",
    )
    assert line["endpoint"] == "e1"


async def _app(scope: object, receive: object, send: object) -> None:
    """An app the server is made for (never run)."""


def _made_server() -> None:
    server(_app, "127.0.0.1", 0)


@pytest.mark.parametrize("server_first", [False, True], ids=["trunkline up", "--workers N"])
def test_the_http_servers_own_lines_are_json_lines(server_first: bool) -> None:
    # trunkline up configures the logs, then makes its servers; a worker of
    # ``trunkline gateway --workers N`` is handed a server already made, then loads the app,
    # which configures them.
    with json_log_lines(before=_made_server if server_first else lambda: None) as lines:
        if not server_first:
            _made_server()
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.warning("Invalid HTTP request received.")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            uvicorn_log.exception("Exception in ASGI application\n")
        records = lines()
    assert [(r["level"], r["logger"], r["msg"]) for r in records] == [
        ("warning", "uvicorn.error", "Invalid HTTP request received."),
        ("error", "uvicorn.error", "Exception in ASGI application\n"),
    ]
    assert "RuntimeError: boom" in records[1]["exc"]


def test_a_warning_of_pythons_is_a_json_line() -> None:
    # Celery warns so at every start of a worker run as root (as in most containers): four
    # lines of plain text among the JSON ones.
    with json_log_lines() as lines:
        warnings.warn("You're running the worker with superuser privileges", UserWarning, 1)
        [record] = lines()
    assert (record["level"], record["logger"]) == ("warning", "py.warnings")
    assert "UserWarning: You're running the worker with superuser privileges" in record["msg"]


def test_an_error_that_stops_the_process_or_a_thread_is_a_json_line() -> None:
    # What a crash leaves: Python's traceback was the one multi-line text in the JSON lines.
    with json_log_lines() as lines:
        for fail in (_uncaught, _uncaught_in_a_thread):
            fail(RuntimeError("the ledger's schema is newer than this release"))
        records = lines()
    assert [(r["level"], "RuntimeError: the ledger's schema" in r["exc"]) for r in records] == [
        ("critical", True),
        ("critical", True),
    ]
    assert records[1]["thread_name"] == "ingest"


def _uncaught(error: Exception) -> None:
    try:
        raise error
    except RuntimeError:
        sys.excepthook(*sys.exc_info())


def _uncaught_in_a_thread(error: Exception) -> None:
    def fail() -> None:
        raise error

    thread = threading.Thread(target=fail, name="ingest")
    thread.start()
    thread.join()
