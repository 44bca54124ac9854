"""Scrape every endpoint's vLLM ``/metrics`` in the background, into :class:`EngineState`.

Every ``interval_s`` (longer with more endpoints than ``max_per_s`` scrapes a second allow at
it) the scraper starts a scrape of each endpoint of the current snapshot that is not still
being scraped (a slow engine skips ticks instead of piling up or delaying the
others), at most ``concurrency`` at once, each bounded by ``timeout_s`` as a whole (a page
that trickles in a byte at a time times out too, not only a silent one) and by
``MAX_PAGE_BYTES``. A failed or timed-out scrape counts as a failure for the endpoint's health;
ejected endpoints are scraped again only when their ejection ends, as the probe that readmits
them. An endpoint that answers without engine metrics (404, or a 200 page that is not
Prometheus text: a server other than vLLM, a proxy that does not pass ``/metrics`` on) is up,
as far as a scrape can tell, with its load unknown (:meth:`EngineState.unmetered`): ejecting
it for that took an endpoint that serves completions out of service for good; it is scraped
ever less often, up to the longest probe interval, until it serves them. An endpoint leaving
the snapshot with requests of this gateway still on it is scraped until they end (an engine
stopped meanwhile is ejected, and they move on); the others have their scrape cancelled.
Figures are at most ``interval_s`` plus one scrape old while an engine answers
(``EndpointLoad.age_s`` says).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import httpx

from trunkline.gateway.endpoints.scan import scan_cache_config, scan_metrics
from trunkline.gateway.endpoints.state import EngineState
from trunkline.snapshot import EndpointEntry

__all__ = ["MetricsScraper"]

log = logging.getLogger(__name__)
_TASK_PREFIX = "scrape-"
MAX_PAGE_BYTES = 4 << 20
"""vLLM's page is tens of kilobytes (more with many LoRA adapters or engine cores); a page
past this is not an engine's, and is not read further."""


class MetricsScraper:
    def __init__(
        self,
        state: EngineState,
        client: httpx.AsyncClient,
        endpoints: Callable[[], Sequence[EndpointEntry]],
        *,
        interval_s: float = 0.1,
        timeout_s: float = 1.0,
        concurrency: int = 32,
        max_per_s: float = 200.0,
    ) -> None:
        self.state = state
        self._client = client
        self._endpoints = endpoints
        self._interval_s = interval_s
        self._max_per_s = max_per_s
        self._timeout_s = timeout_s
        self._timeout = httpx.Timeout(timeout_s)
        self._slots = asyncio.Semaphore(concurrency)
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._known: tuple[str, ...] = ()
        self._entries: Sequence[EndpointEntry] = ()
        self._draining: dict[str, EndpointEntry] = {}
        """Endpoints the snapshot removed with requests still on them (:meth:`EngineState.sync`):
        scraped until those end, so a stopped engine is ejected and its requests move on."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-metrics-scraper")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._busy.clear()

    def tick(self) -> list[asyncio.Task[None]]:
        """Start the scrapes due now; returns them (tests await them)."""
        endpoints = self._endpoints()
        ids = tuple(e.id for e in endpoints)
        changed = ids != self._known
        if changed:
            self._draining.update((e.id, e) for e in self._entries)
            self.state.sync(ids)
            self._known, self._entries = ids, endpoints
        if self._draining:
            draining = self.state.draining()
            kept = {key: e for key, e in self._draining.items() if key in draining}
            changed |= len(kept) < len(self._draining)
            self._draining = kept
            endpoints = (*endpoints, *kept.values())
        if changed:
            for gone in self._busy.keys() - set(ids) - self._draining.keys():
                self._busy.pop(gone).cancel()  # its slot goes to the endpoints still served
        started = []
        for endpoint in endpoints:
            if endpoint.id in self._busy or not self.state.should_scrape(endpoint.id):
                continue
            task = asyncio.create_task(self._scrape(endpoint), name=_TASK_PREFIX + endpoint.id)
            self._busy[endpoint.id] = task
            task.add_done_callback(self._done)
            started.append(task)
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        key = task.get_name().removeprefix(_TASK_PREFIX)
        if self._busy.get(key) is task:
            del self._busy[key]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("engine scrape tick failed")
            interval = self.interval_s()
            next_at += interval
            now = loop.time()
            if next_at < now:  # the loop was blocked: skip the missed ticks, do not burst
                next_at = now + interval
            await asyncio.sleep(next_at - now)

    def interval_s(self) -> float:
        """Between ticks: the configured interval, or longer when the endpoints are more than
        ``max_per_s`` allows at it."""
        return max(self._interval_s, len(self._known) / self._max_per_s)

    async def _scrape(self, endpoint: EndpointEntry) -> None:
        async with self._slots:
            sent_at = self.state.now()
            try:
                async with asyncio.timeout(self._timeout_s):
                    page, failure = await self._fetch(endpoint.url + "/metrics")
            except TimeoutError:
                page, failure = b"", "ScrapeTimeout"
            except httpx.HTTPError as exc:
                page, failure = b"", type(exc).__name__
            if failure is not None:
                self.state.scrape_failed(endpoint.id, failure)
                return
            if page is None:
                self.state.unmetered(endpoint.id, "HTTP 404")
                return
            scan = scan_metrics(page)
            if not scan.gauges_found and b"# TYPE " not in page:
                # Not a Prometheus page at all. A Prometheus page without vLLM's gauges
                # (``--disable-log-stats``) reads as unknown load alike, but of a vLLM.
                self.state.unmetered(endpoint.id, "not Prometheus text")
                return
            self.state.scraped(endpoint.id, scan, sent_at, lambda: scan_cache_config(page))

    async def _fetch(self, url: str) -> tuple[bytes | None, str | None]:
        """The page (None: there is none, 404), or why the scrape failed (the status, a page
        too big)."""
        async with self._client.stream("GET", url, timeout=self._timeout) as response:
            if response.status_code not in (200, 404):
                return b"", f"HTTP {response.status_code}"
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_PAGE_BYTES:
                    return b"", f"page over {MAX_PAGE_BYTES} bytes"
                chunks.append(chunk)  # a 404's too: read whole, its connection is kept
            return (b"".join(chunks) if response.status_code == 200 else None), None
