"""Run the engine-state machinery of one gateway: the scraper and the KV-event subscriber,
both following the endpoints of the current snapshot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

from trunkline.gateway.endpoints.block_sizes import BlockSizeCheck
from trunkline.gateway.endpoints.health import EjectionPolicy
from trunkline.gateway.endpoints.kv_subscriber import KvEventSink, KvEventSubscriber
from trunkline.gateway.endpoints.scraper import MetricsScraper
from trunkline.gateway.endpoints.state import EngineState
from trunkline.settings import EngineStateSettings
from trunkline.snapshot import EndpointEntry, Snapshot

__all__ = ["EngineMonitor", "ejection_policy"]


def ejection_policy(settings: EngineStateSettings) -> EjectionPolicy:
    return EjectionPolicy(
        eject_after=settings.eject_after_failures,
        base_s=settings.ejection_base_s,
        max_s=settings.ejection_max_s,
        probe_max_s=settings.ejection_probe_max_s,
    )


class _Endpoints:
    """Every endpoint of the current snapshot, recomputed only when its version moves."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot
        self._version = -1
        self._endpoints: tuple[EndpointEntry, ...] = ()
        self._ids: frozenset[str] = frozenset()

    def __call__(self) -> tuple[EndpointEntry, ...]:
        snapshot = self._snapshot()
        if snapshot.version != self._version:
            seen: dict[str, EndpointEntry] = {}
            for pool in snapshot.pools.values():
                for endpoint in pool.endpoints:
                    seen.setdefault(endpoint.id, endpoint)
            self._endpoints, self._version = tuple(seen.values()), snapshot.version
            self._ids = frozenset(seen)
        return self._endpoints

    def has(self, endpoint_id: str) -> bool:
        """Whether the current snapshot has the endpoint."""
        self()
        return endpoint_id in self._ids

    @property
    def version(self) -> int:
        return self._version


class EngineMonitor:
    """Owns :class:`EngineState` and keeps it fed; ``start`` / ``close`` in the app lifespan.

    ``client`` is used for scrapes only (``None``: no scraping; health then comes from
    requests alone). ``kv_sink`` receives KV-cache events of endpoints that publish them
    (``None``: no subscriptions). ``block_sizes`` tells of engines whose KV block size is not
    their pool's, when a scrape reads it and when the snapshot changes.
    """

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        settings: EngineStateSettings,
        *,
        client: httpx.AsyncClient | None,
        kv_sink: KvEventSink | None = None,
    ) -> None:
        self.state = EngineState(ejection_policy(settings), lost_stream_s=settings.lost_stream_s)
        self.block_sizes = BlockSizeCheck(snapshot, self.state)
        self.state.on_cache_config = lambda _endpoint: self.block_sizes.check()
        self._settings = settings
        self._endpoints = _Endpoints(snapshot)
        self.state.in_snapshot = self._endpoints.has
        self._client = client
        self._kv_sink = kv_sink
        self.scraper: MetricsScraper | None = None
        self.kv_subscriber: KvEventSubscriber | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self._settings
        if self._client is not None:
            self.scraper = MetricsScraper(
                self.state,
                self._client,
                self._endpoints,
                interval_s=settings.scrape_interval_s,
                timeout_s=settings.scrape_timeout_s,
                concurrency=settings.scrape_concurrency,
                max_per_s=settings.scrapes_per_s,
            )
            await self.scraper.start()
            self.state.probed_by_scrapes = True
        if self._kv_sink is not None and settings.kv_events:
            self.kv_subscriber = KvEventSubscriber(self._kv_sink, self._endpoints)
        self._task = asyncio.create_task(self._follow(), name="engine-monitor")

    async def _follow(self) -> None:
        """Track snapshot changes (the scraper does too; this covers a gateway without one)."""
        version = None
        while True:
            endpoints = self._endpoints()
            if self._endpoints.version != version:
                version = self._endpoints.version
                if self.scraper is None:
                    self.state.sync(e.id for e in endpoints)
                if self.kv_subscriber is not None:
                    self.kv_subscriber.sync()
                self.block_sizes.check()  # a pool's block_size may have changed
            await asyncio.sleep(self._settings.scrape_interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.scraper is not None:
            await self.scraper.close()
        if self.kv_subscriber is not None:
            await self.kv_subscriber.close()
        if self._client is not None:
            await self._client.aclose()
