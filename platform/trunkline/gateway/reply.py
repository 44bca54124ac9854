"""What the request path returns to the HTTP layer: a finished JSON body or a stream of SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """A finished JSON reply (``events`` is None) or a stream of SSE bytes."""

    status: int
    body: bytes
    events: AsyncIterator[bytes] | None
    headers: dict[str, str]
