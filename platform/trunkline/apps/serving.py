"""Run several ASGI apps under uvicorn in one event loop, stopped together on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator, Iterable
from typing import Any, Literal

import uvicorn

from trunkline.kit.header_timeout import header_timeout_protocol

GATEWAY = "gateway"
CONTROL_PLANE = "controlplane"
"""Server names, under which each counts the connections it closed for a late request head."""


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server(
    app: Any,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    header_timeout_s: float | None = None,
    name: str = "server",
) -> uvicorn.Server:
    """``header_timeout_s``: close a connection whose request head is late (docs/gateway.md,
    Settings), counted under ``name``; None leaves uvicorn's own protocol (test engines)."""
    http: type[asyncio.Protocol] | Literal["auto"] = "auto"
    if header_timeout_s is not None:
        http = header_timeout_protocol(header_timeout_s, name)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on", access_log=False, http=http
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
