"""Redis replies as Python text: redis-py answers ``bytes`` unless a client decodes responses,
and this project's clients do not (the usage stream's payloads are msgpack/JSON bytes)."""

from __future__ import annotations


def reply_text(value: bytes | str) -> str:
    """``value`` decoded as UTF-8 if Redis sent bytes."""
    return value.decode() if isinstance(value, bytes) else value
