"""Composition root of the gateway process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar
from prometheus_client import CollectorRegistry

from trunkline.gateway.handlers import build_app
from trunkline.gateway.service import GatewayService
from trunkline.gateway.state import SnapshotHolder
from trunkline.metering.stream import UsageEmitter
from trunkline.quota.enforcer import QuotaEnforcer
from trunkline.quota.fallback import FallbackQuotaStore
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.store import QuotaStore
from trunkline.quota.windows import Clock, system_clock
from trunkline.settings import GatewaySettings, QuotaSettings
from trunkline.snapshot import SnapshotSource


def create_gateway_app(
    *,
    source: SnapshotSource,
    emitter: UsageEmitter,
    server_secret: bytes,
    settings: GatewaySettings,
    transport: httpx.AsyncBaseTransport | None = None,
    quota_store: QuotaStore | None = None,
    clock: Clock = system_clock,
) -> Litestar:
    """Build the gateway app; ``transport`` lets tests substitute the upstream.

    ``quota_store``: where quotas are counted. A remote one (Redis) is wrapped so the gateway
    keeps limiting per process while it is away; ``None`` counts in this process's memory
    (tests, benchmarks). ``clock`` (epoch ms) times quota windows.
    """
    registry = CollectorRegistry()
    quota = quota_enforcer(quota_store, settings.quota, QuotaMetrics(registry), clock)
    holder = SnapshotHolder(source, settings.snapshot_poll_s)
    client = httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
        ),
    )
    service = GatewayService(holder, emitter, client, server_secret, quota=quota)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await holder.start()
        await emitter.start()
        await quota.start()
        try:
            yield
        finally:
            await holder.close()
            await quota.close()
            await emitter.close()
            await client.aclose()

    return build_app(
        service, max_body_bytes=settings.max_body_bytes, lifespan=[lifespan], metrics=registry
    )


def quota_enforcer(
    shared: QuotaStore | None, settings: QuotaSettings, metrics: QuotaMetrics, clock: Clock
) -> QuotaEnforcer:
    store: QuotaStore = shared or InMemoryQuotaStore()
    if shared is not None and not isinstance(shared, InMemoryQuotaStore):
        store = FallbackQuotaStore(
            shared,
            metrics,
            fail_open=settings.on_store_failure == "open",
            local_share=settings.local_share,
            probe_every_ms=int(settings.probe_every_s * 1000),
        )
    return QuotaEnforcer(store, settings, metrics, clock)
