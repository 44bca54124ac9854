"""Composition root of the gateway process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar

from trunkline.gateway.handlers import build_app
from trunkline.gateway.service import GatewayService
from trunkline.gateway.state import SnapshotHolder
from trunkline.metering.stream import UsageEmitter
from trunkline.settings import GatewaySettings
from trunkline.snapshot import SnapshotSource


def create_gateway_app(
    *,
    source: SnapshotSource,
    emitter: UsageEmitter,
    server_secret: bytes,
    settings: GatewaySettings,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Litestar:
    """Build the gateway app; ``transport`` lets tests substitute the upstream."""
    holder = SnapshotHolder(source, settings.snapshot_poll_s)
    client = httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
    )
    service = GatewayService(holder, emitter, client, server_secret)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await holder.start()
        await emitter.start()
        try:
            yield
        finally:
            await holder.close()
            await emitter.close()
            await client.aclose()

    return build_app(service, max_body_bytes=settings.max_body_bytes, lifespan=[lifespan])
