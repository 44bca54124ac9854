"""An ASGI app under a real uvicorn server in this test's event loop and main thread, so it
handles the signals the test raises as ``trunkline gateway`` or ``controlplane`` would."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from support.servers import free_port


@asynccontextmanager
async def serving_signals(app: Any) -> AsyncIterator[tuple[str, asyncio.Task[None]]]:
    """``app``'s loopback URL, and the task serving it. SIGTERM is this test's own while it
    runs: uvicorn raises the signals it handled again once it stopped, for the default handler
    to end the process."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    heard: list[int] = []
    own: Callable[..., Any] = lambda sig, _frame: heard.append(sig)  # noqa: E731
    before = signal.signal(signal.SIGTERM, own)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", task
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        signal.signal(signal.SIGTERM, before)
