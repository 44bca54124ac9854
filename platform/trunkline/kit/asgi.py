"""Running work for an HTTP request only while its client is still connected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["Receive", "unless_client_leaves"]

T = TypeVar("T")
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
"""ASGI's ``receive``."""


async def unless_client_leaves(work: Coroutine[Any, Any, T], receive: Receive) -> T | None:
    """``work``'s result, or None when the client disconnected first (``work`` is then
    cancelled); its exceptions propagate. Call it once the request body is read: from then on
    ``receive`` only answers when the client disconnects (ASGI servers answer every call after
    that with another disconnect, so whoever listens next still hears it)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        task.cancel()  # a no-op once it is done
        await asyncio.gather(task, watcher, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
