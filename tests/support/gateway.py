"""An ASGI app (a gateway, usually) served by uvicorn on a free loopback port inside the test's
event loop, and the usage records a gateway metered."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from trunkline.apps import serving
from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream

__all__ = ["serve_on_loopback", "usage_records"]


@contextlib.asynccontextmanager
async def serve_on_loopback(
    app: Any,
    *,
    header_timeout_s: float | None = None,
    keep_alive_timeout_s: float | None = None,
    name: str = serving.GATEWAY,
) -> AsyncIterator[str]:
    """Serve ``app`` (lifespan included) until the block ends; yields its base URL.
    ``header_timeout_s``, ``keep_alive_timeout_s``: as ``trunkline gateway`` holds connections
    (None: uvicorn's own), a late head counted under the server ``name``."""
    (port,) = free_loopback_ports(1)
    server = serving.server(
        app,
        LOOPBACK,
        port,
        header_timeout_s=header_timeout_s,
        keep_alive_timeout_s=keep_alive_timeout_s,
        name=name,
    )
    task = asyncio.create_task(server.serve())
    await serving.wait_started([server], [task])
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        await task


async def usage_records(
    usage: InMemoryUsageStream, count: int, timeout_s: float = 10.0
) -> list[UsageRecord]:
    """The records in ``usage`` (not acknowledged) once ``count`` are there, or at the deadline
    (a usage event is emitted after the response's last byte)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(usage) < count:  # noqa: ASYNC110 - polls a stream
        await asyncio.sleep(0.02)
    return [record for _id, record in usage.read(1000)]
