"""JSON log lines: what a log collector needs to order and join lines from several hosts."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

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
