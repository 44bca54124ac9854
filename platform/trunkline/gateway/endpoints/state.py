"""The gateway's view of its engines: scraped load, its own requests in flight, and health.

One :class:`EngineState` per gateway process. The scraper writes scrapes into it, the request
path writes what it sends and what comes back, and routing and admission read
:meth:`EngineState.loads` (an :class:`EndpointLoad` per endpoint id) and
:meth:`EngineState.in_service`. :meth:`EngineState.wait_changed` lets admission sleep until any
load moved instead of polling. Everything runs on the event loop: no locks.

Local accounting fills what a scrape cannot know yet: ``queued_prompt_tokens`` sums the prefill
estimates (prompt less what the endpoint likely caches) of this gateway's streamed requests to the
endpoint whose first byte has not come back, and of its latest plain (non-streamed) ones as many as
the engine reports waiting (a plain answer comes back whole, so its first byte says nothing of when
its prefill ended); requests sent since the last scrape are added to ``waiting`` (the engine had
not counted them yet when it was scraped). ``unaccounted_waiting`` is what remains of the scrape's
``waiting`` once this gateway's requests that may have been waiting then are taken off: those sent
before the scrape's answer came whose first byte had not come back when it was sent, whether it has
since or not. A scrape that still shows a request waiting whose first token has come back since is
then no unknown prompt ahead. It is a lower bound: a plain request of ours already running when the
scrape was taken counts as ours too.

Each endpoint's KV-cache size (``EndpointLoad.kv_capacity_tokens``) and block size
(``EndpointHealth.block_size``, checked against its pools' by
:class:`~trunkline.gateway.endpoints.block_sizes.BlockSizeCheck`) are read from its page once, and
again only after the engine restarted (:func:`~trunkline.gateway.endpoints.scan.restarted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from trunkline.gateway.endpoints._tracked import Flight, TrackedEndpoint
from trunkline.gateway.endpoints.health import EjectionPolicy
from trunkline.gateway.endpoints.rates import Rates, next_rates
from trunkline.gateway.endpoints.scan import CacheConfig, MetricsScan, restarted
from trunkline.gateway.routing.views import EndpointLoad

__all__ = ["EngineState", "Flight"]

log = logging.getLogger(__name__)

_MAX_REMOVED = 1024
"""Endpoints remembered as removed from the snapshot, beyond those still tracked: a request
routed before the change and sent after it (held by admission meanwhile) does not track its
endpoint again for good."""


class EndpointHealth(NamedTuple):
    """One endpoint as the gateway sees it (:meth:`EngineState.health_report`)."""

    endpoint: str
    in_service: bool
    ejections: int
    request_failures: int
    scrape_failures: int
    in_flight: int
    scrape_age_s: float | None
    """Seconds since its metrics last answered (None: never scraped)."""
    block_size: int | None = None
    """The engine's KV block size, as its page says (None: not read yet, or not said)."""
    without_metrics: str | None = None
    """Why its scrapes find no engine metrics (``HTTP 404``, ``not Prometheus text``), while
    they do not: its load is unknown (None: it serves them, or was not scraped yet)."""


class EngineState:
    """Load and health of every endpoint of the current snapshot, keyed by endpoint id."""

    def __init__(
        self,
        policy: EjectionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        lost_stream_s: float = 10.0,
    ) -> None:
        self._policy = policy or EjectionPolicy()
        self._lost_stream_s = lost_stream_s
        """A stream whose head came this long before a scrape showing its engine running and
        queueing nothing, and which still has no first event, is lost there."""
        self._clock = clock
        self._endpoints: dict[str, TrackedEndpoint] = {}
        self._removed: dict[str, None] = {}
        """Endpoints a snapshot removed, oldest first: a late outcome of theirs does not track
        them again. (One not synced yet, new in the snapshot a request already used, is
        tracked.) Those with requests still on them stay tracked until the last ends
        (:meth:`draining`); of the others only the latest :data:`_MAX_REMOVED` are kept."""
        self._changed = asyncio.Event()
        self._changes = 0
        self.probed_by_scrapes = False
        """A scraper runs: it probes endpoints whose ejection ended, and requests wait for it."""
        self.on_restart: Callable[[str], None] | None = None
        """Told the endpoint id when a scrape shows its engine restarted (its prefix cache is
        empty): the approximate routing index forgets what it sent there."""
        self.on_removed: Callable[[str], None] | None = None
        """Told the endpoint id when it left the snapshot (and its last request ended): what
        the approximate routing index holds of it is forgotten. An endpoint enabled again
        under its id comes back with another engine (an upgrade, a restart), and a gateway
        following autoscaled endpoints would otherwise keep every one it ever routed to."""
        self.in_snapshot: Callable[[str], bool] | None = None
        """Asked an endpoint id, whether the snapshot the gateway follows has it now, ahead of
        the next :meth:`sync` (None: only syncs tell)."""
        self.on_cache_config: Callable[[str], None] | None = None
        """Told the endpoint id when its cache config was read (its first scrape, a restart):
        its block size may now differ from its pools'."""

    def now(self) -> float:
        """The clock every time in here is on (monotonic seconds)."""
        return self._clock()

    # --- membership --------------------------------------------------------------------------

    def sync(self, endpoint_ids: Iterable[str]) -> None:
        """Follow the snapshot: track these endpoints, forget the others once no request of
        this gateway is on them. Until then they are still scraped, their failures count and
        eject them: an engine stopped after it left the configuration (scaled down) may keep
        its requests open and silent, and its ejection is what moves them on."""
        wanted = set(endpoint_ids)
        removed = self._removed
        for gone in self._endpoints.keys() - wanted:
            if not self._endpoints[gone].flights:
                del self._endpoints[gone]
            removed[gone] = None
            self._forget(gone)
        for back in wanted & removed.keys():
            del removed[back]
        if len(removed) > _MAX_REMOVED:  # a gateway following endpoints churned all day
            for old in [key for key in removed if key not in self._endpoints]:
                del removed[old]
                if len(removed) <= _MAX_REMOVED:
                    break
        for new in wanted - self._endpoints.keys():
            self._endpoints[new] = TrackedEndpoint(self._policy)

    def serves(self, endpoint: str) -> bool:
        """Not removed from the snapshot (a removed endpoint is tracked while requests of this
        gateway drain from it): what admission may still send held requests to. One not
        tracked yet (a snapshot newer than the last sync) is: routing took it from there; so is
        one removed and back in the snapshot since (disabled, then enabled again)."""
        if endpoint not in self._removed:
            return True
        in_snapshot = self.in_snapshot
        return in_snapshot is not None and in_snapshot(endpoint)

    def draining(self) -> set[str]:
        """Endpoints the snapshot removed that are tracked until their requests end."""
        return self._removed.keys() & self._endpoints.keys()

    def _get(self, endpoint: str) -> TrackedEndpoint:
        state = self._endpoints.get(endpoint)
        if state is None:  # a request raced a snapshot change: track it until the next sync
            state = self._endpoints[endpoint] = TrackedEndpoint(self._policy)
        return state

    # --- what routing and admission read -------------------------------------------------------

    def loads(self) -> Mapping[str, EndpointLoad]:
        now = self._clock()
        return {key: state.load(now) for key, state in self._endpoints.items()}

    def load(self, endpoint: str) -> EndpointLoad | None:
        """One endpoint's load (None: not tracked yet); cheaper than ``loads()`` per request."""
        state = self._endpoints.get(endpoint)
        return None if state is None else state.load(self._clock())

    def in_service(self, endpoint: str) -> bool:
        """False while the endpoint is ejected (unknown endpoints are in service)."""
        state = self._endpoints.get(endpoint)
        return state is None or state.health.in_service(self._clock())

    def routable(self, endpoint: str) -> bool:
        """In service, and not half-open while a scraper probes it: a request sent to an
        endpoint that may still be frozen would wait on it, where a scrape finds out within
        its timeout. Without a scraper, the next request is the probe."""
        state = self._endpoints.get(endpoint)
        if state is None:
            return True
        now = self._clock()
        if self.probed_by_scrapes and state.health.half_open(now):
            return False
        return state.health.in_service(now)

    def health_report(self) -> list[EndpointHealth]:
        """Every tracked endpoint's health, for the gateway's own metrics."""
        now = self._clock()
        return [
            EndpointHealth(
                endpoint=key,
                in_service=self.routable(key),  # not while half-open awaiting its probe
                ejections=state.health.ejections,
                request_failures=state.health.failures_total["request"],
                scrape_failures=state.health.failures_total["scrape"],
                in_flight=len(state.flights),
                scrape_age_s=now - state.scrape_answered_at if state.scrape_answered_at else None,
                block_size=state.block_size,
                without_metrics=state.without_metrics,
            )
            for key, state in sorted(self._endpoints.items())
        ]

    def block_sizes(self) -> dict[str, int]:
        """The engines' KV block sizes, by endpoint, of those whose page said it."""
        return {
            key: state.block_size
            for key, state in self._endpoints.items()
            if state.block_size is not None
        }

    def ejections(self, endpoint: str) -> int:
        state = self._endpoints.get(endpoint)
        return 0 if state is None else state.health.ejections

    async def wait_changed(self, timeout: float) -> None:  # noqa: ASYNC109 - admission's protocol
        """Return when any endpoint's load changed, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    @property
    def changes(self) -> int:
        """How many times any endpoint's load changed (admission's protocol)."""
        return self._changes

    def _notify(self) -> None:
        self._changes += 1
        self._changed.set()
        self._changed = asyncio.Event()

    # --- what the scraper writes ---------------------------------------------------------------

    def should_scrape(self, endpoint: str) -> bool:
        """Ejected endpoints are left alone until their ejection ends (then scraped as a
        probe), unless requests wait on one for their first byte (every endpoint was ejected,
        and routing tried them all): a failed scrape then tells them to move on."""
        state = self._endpoints.get(endpoint)
        if state is None:
            return True
        now = self._clock()
        if state.health.in_service(now):
            # One serving no metrics waits out its back-off (``unmetered``), unless half-open:
            # its scrape is the probe that readmits it.
            return now >= state.next_scrape_at or state.health.half_open(now)
        return any(flight.waiting_first_byte for flight in state.flights)

    def scraped(
        self,
        endpoint: str,
        scan: MetricsScan,
        sent_at: float,
        cache_config: Callable[[], CacheConfig] | None = None,
    ) -> None:
        """A scrape's figures; ``cache_config`` reads the page's KV-cache size and block size,
        called only while they are unknown or when this page shows the engine restarted."""
        state = self._endpoints.get(endpoint)
        if state is None:
            return  # left the snapshot while we scraped it
        if state.without_metrics is not None:
            state.without_metrics, state.unmetered_scrapes, state.next_scrape_at = None, 0, 0.0
            log.info("endpoint serves engine metrics again", extra={"endpoint_id": endpoint})
        before = state.scan or state.scan_before
        restart = before is not None and restarted(before, scan)
        state.scan_before = None
        if cache_config is not None and (not state.capacity_read or restart):
            state.kv_capacity, state.block_size = cache_config()
            state.capacity_read = True
            if self.on_cache_config is not None:
                self.on_cache_config(endpoint)
        if restart:
            log.info("engine restarted", extra={"endpoint_id": endpoint})
            if self.on_restart is not None:
                self.on_restart(endpoint)
        now = self._clock()
        window = sent_at - state.scrape_sent_at if state.scan is not None else 0.0
        state.rates = next_rates(state.scan, scan, state.rates, window)
        state.scan, state.scrape_sent_at, state.scrape_answered_at = scan, sent_at, now
        self._succeeded(endpoint, state, now, scrape=True)
        if scan.gauges_found and scan.running == 0 and scan.waiting == 0:
            self._lost_streams(endpoint, state, sent_at - self._lost_stream_s)
        self._notify()

    def _lost_streams(self, endpoint: str, state: TrackedEndpoint, head_before: float) -> None:
        """The engine runs and queues nothing, yet streams whose head came well before the
        scrape still wait for their first token: it lost them (an API server that took the
        request but never handed it on). Each moves to the next endpoint, as on an ejection
        (nothing reached its client), and counts against this one: its scrapes answer, so
        only requests can say it is broken."""
        lost = [
            flight
            for flight in state.flights
            if flight.waiting_first_byte
            and flight.head_at is not None
            and flight.head_at <= head_before
            and flight.on_ejected is not None
        ]
        for flight in lost:
            flight.head_at = None  # once: it ends as it leaves
            assert flight.on_ejected is not None
            flight.on_ejected()
        if lost:  # one failure however many: one page said it
            self._failed(endpoint, "idle while a stream awaited its first token", scrape=False)

    def unmetered(self, endpoint: str, reason: str) -> None:
        """The endpoint answered its scrape without engine metrics (``reason``: a 404, a page
        that is not Prometheus text): its server is up, a success for its health as any
        answered scrape (the probe that readmits it), and its load is unknown, as before its
        first scrape (routing counts what this gateway sent it). Its requests judge its health.
        Logged once, until a scrape finds metrics again. Its scrapes back off as the probes of
        an ejected endpoint do, from ``base_s`` doubling to ``probe_max_s`` (5 s): at the
        scrape interval (10 a second) they cost its server and this gateway for nothing, and
        metrics it starts serving are still found within that."""
        state = self._endpoints.get(endpoint)
        if state is None:
            return
        if state.without_metrics is None:
            log.warning(
                "endpoint serves no engine metrics (%s): routed with its load unknown, its "
                "health judged by its requests; serve vLLM's /metrics there for load-aware "
                "routing and admission",
                reason,
                extra={"endpoint_id": endpoint, "reason": reason},
            )
        state.without_metrics = reason
        now = self._clock()
        state.unmetered_scrapes = min(state.unmetered_scrapes + 1, 32)  # 2**n stays a float
        backoff = self._policy.base_s * 2 ** (state.unmetered_scrapes - 1)
        state.next_scrape_at = now + min(backoff, self._policy.probe_max_s)
        if state.scan is not None:  # figures it no longer serves are not its load any more
            state.scan_before, state.scan, state.rates = state.scan, None, Rates()
            state.scrape_sent_at = state.scrape_answered_at = 0.0
            self._notify()
        self._succeeded(endpoint, state, now, scrape=True)

    def scrape_failed(self, endpoint: str, reason: str) -> None:
        state = self._endpoints.get(endpoint)
        if state is not None:
            # Failing now: scraped at the full rate again, so it is ejected as soon as any.
            state.unmetered_scrapes, state.next_scrape_at = 0, 0.0
            self._failed(endpoint, f"scrape: {reason}", scrape=True)

    # --- what the request path writes ----------------------------------------------------------

    def sent(self, endpoint: str, prefill_tokens: int, *, streamed: bool = True) -> Flight:
        flight = Flight(endpoint, prefill_tokens, self._clock(), streamed=streamed)
        self._get(endpoint).flights.add(flight)
        self._notify()
        return flight

    def head(self, flight: Flight) -> None:
        """A stream's response head came (its first event has not)."""
        flight.head_at = self._clock()

    def first_byte(self, flight: Flight) -> None:
        if flight.waiting_first_byte:
            flight.waiting_first_byte = False
            state = self._endpoints.get(flight.endpoint)
            if state is not None:
                state.stop_waiting(flight, self._clock())
            self._notify()

    def ended(self, flight: Flight) -> None:
        state = self._endpoints.get(flight.endpoint)
        if state is not None and flight in state.flights:
            state.flights.discard(flight)
            if flight.waiting_first_byte:  # failed or cancelled before its first byte
                state.stop_waiting(flight, self._clock())
            if not state.flights and flight.endpoint in self._removed:
                del self._endpoints[flight.endpoint]  # left the snapshot while in flight
                self._forget(flight.endpoint)
            self._notify()

    def _forget(self, endpoint: str) -> None:
        if self.on_removed is not None:
            self.on_removed(endpoint)

    def failed(self, endpoint: str, reason: str) -> None:
        """A request's connect error, 5xx, timeout, or failure before or during its stream."""
        self._failed(endpoint, reason, scrape=False)

    def _failed(self, endpoint: str, reason: str, *, scrape: bool) -> None:
        if endpoint in self._removed and endpoint not in self._endpoints:
            return  # left the snapshot: tracked again it showed in /health and /metrics
        state = self._get(endpoint)
        now = self._clock()
        if scrape and state.health.ejected(now):
            # Requests sent to it anyway (every endpoint was ejected) wait on it: its probe
            # failed, so they move on instead of waiting out the ejection (up to 30 s).
            for flight in list(state.flights):
                if flight.waiting_first_byte and flight.on_ejected is not None:
                    flight.on_ejected()
        if state.health.failed(now, scrape=scrape):
            until = (state.health.ejected_until or 0.0) - now
            log.warning(
                "endpoint ejected",
                extra={"endpoint_id": endpoint, "reason": reason, "ejected_for_s": round(until, 3)},
            )
            for flight in list(state.flights):
                if flight.on_ejected is not None:
                    flight.on_ejected()
            self._notify()

    def succeeded(self, endpoint: str) -> None:
        """A request answered (a stream: ended whole)."""
        state = self._endpoints.get(endpoint)
        if state is not None:
            self._succeeded(endpoint, state, self._clock(), scrape=False)

    def _succeeded(
        self, endpoint: str, state: TrackedEndpoint, now: float, *, scrape: bool
    ) -> None:
        if state.health.succeeded(now, scrape=scrape):
            log.info("endpoint readmitted", extra={"endpoint_id": endpoint})
            self._notify()
