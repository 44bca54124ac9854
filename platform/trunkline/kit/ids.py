"""Identifiers: request ids and time helpers."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime


def new_request_id() -> str:
    return "req-" + secrets.token_hex(12)


def utcnow() -> datetime:
    return datetime.now(UTC)


def epoch_s() -> float:
    return time.time()
