"""Running work for an HTTP request only while its client is still connected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["CLIENT_LEFT", "Receive", "left_by_client", "unless_client_leaves"]

T = TypeVar("T")
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
"""ASGI's ``receive``."""

CLIENT_LEFT = "the client disconnected"
"""The message of the cancellation :func:`unless_client_leaves` sends its work when the client
leaves. Any other cancellation of that work is the server's: uvicorn cancelling the requests
left once its drain time is out."""


def left_by_client(cancelled: asyncio.CancelledError) -> bool:
    """Whether work was cancelled because its client left (not because the server stops)."""
    return CLIENT_LEFT in cancelled.args


async def unless_client_leaves(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """``work``'s result, or None when the client disconnected first (``work`` is then
    cancelled with :data:`CLIENT_LEFT`); its exceptions propagate. Call it once the request
    body is read: from then on ``receive`` only answers when the client disconnects (ASGI
    servers answer every call after that with another disconnect, so whoever listens next
    still hears it)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    left = False
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        left = watcher.done() and not watcher.cancelled() and watcher.exception() is None
    finally:
        watcher.cancel()
        task.cancel(CLIENT_LEFT if left else None)  # a no-op once it is done
        await asyncio.gather(task, watcher, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
