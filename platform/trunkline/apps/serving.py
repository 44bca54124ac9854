"""Run several ASGI apps under uvicorn in one event loop, stopped together on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator, Iterable
from typing import Any

import uvicorn


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server(app: Any, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False
    )
    return _QuietServer(config)


async def wait_started(servers: Iterable[uvicorn.Server], tasks: list[asyncio.Task[None]]) -> None:
    """Return once every server listens; raise if one of them exited instead."""
    pending = list(servers)
    while pending:
        for task in tasks:
            if task.done():
                task.result()
                raise RuntimeError("a server stopped during start-up (is its port in use?)")
        pending = [s for s in pending if not s.started]
        await asyncio.sleep(0.02)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
