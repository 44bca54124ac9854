"""One endpoint as :class:`~trunkline.gateway.endpoints.state.EngineState` tracks it: its
health, its last scrape and this gateway's requests on it (:class:`Flight`), and the load
routing and admission read from them (:meth:`TrackedEndpoint.load`; the accounting is
described in :mod:`trunkline.gateway.endpoints.state`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from trunkline.gateway.endpoints.health import EjectionPolicy, Health
from trunkline.gateway.endpoints.rates import Rates
from trunkline.gateway.endpoints.scan import MetricsScan
from trunkline.gateway.routing.views import EndpointLoad

__all__ = ["Flight", "TrackedEndpoint"]

_MAX_LEFT_WAITING = 1024
_LEFT_WAITING_HORIZON_S = 2.0
"""Flights that left the waiting queue are remembered until the next scrape is sent, at most
this long and this many: bounds for when scrapes stop coming (their figures are stale then)."""


class Flight:
    """One request this gateway sent to an endpoint, until it ends."""

    __slots__ = (
        "endpoint",
        "head_at",
        "on_ejected",
        "prefill_tokens",
        "sent_at",
        "streamed",
        "waiting_first_byte",
    )

    def __init__(
        self, endpoint: str, prefill_tokens: int, sent_at: float, *, streamed: bool = True
    ) -> None:
        self.endpoint = endpoint
        self.prefill_tokens = prefill_tokens
        """Prompt tokens the engine will likely have to prefill (not found in its cache)."""
        self.sent_at = sent_at
        self.streamed = streamed
        """Its first byte is its first token; a plain request's first byte is its whole answer."""
        self.waiting_first_byte = True
        self.head_at: float | None = None
        """When a stream's response head came (vLLM sends it as it hands the request to its
        engine, before the first token)."""
        self.on_ejected: Callable[[], None] | None = None
        """Called if its endpoint is ejected while it is set: by the request waiting for its
        first byte (a plain request's whole answer, a stream's first event), so it moves on
        instead of waiting on an engine that stopped (a vLLM whose engine core died before
        aborting the request keeps the connection open and silent); then by the stream being
        relayed, so a stream the stopped engine leaves silent ends soon."""


class TrackedEndpoint:
    __slots__ = (
        "block_size",
        "capacity_read",
        "flights",
        "health",
        "kv_capacity",
        "left_waiting",
        "next_scrape_at",
        "rates",
        "scan",
        "scan_before",
        "scrape_answered_at",
        "scrape_sent_at",
        "unmetered_scrapes",
        "without_metrics",
    )

    def __init__(self, policy: EjectionPolicy) -> None:
        self.health = Health(policy)
        self.scan: MetricsScan | None = None
        self.scan_before: MetricsScan | None = None
        """Its last page with figures while its scrapes find none (:meth:`EngineState.unmetered`):
        the next that has some shows whether the engine restarted meanwhile."""
        self.scrape_sent_at = 0.0
        self.scrape_answered_at = 0.0
        self.rates = Rates()
        self.flights: set[Flight] = set()
        self.kv_capacity: int | None = None
        self.block_size: int | None = None
        self.capacity_read = False
        self.without_metrics: str | None = None
        self.unmetered_scrapes = 0
        """Scrapes in a row that found no engine metrics."""
        self.next_scrape_at = 0.0
        """Not scraped before then while in service: an endpoint serving no metrics."""
        self.left_waiting: deque[tuple[float, float]] = deque(maxlen=_MAX_LEFT_WAITING)
        """(sent, first byte or end) of flights whose first byte came after the last scrape
        was sent, oldest first: the scrape may still count them waiting."""

    def stop_waiting(self, flight: Flight, now: float) -> None:
        left = self.left_waiting
        # Left before the last scrape was sent (not in it), or so long ago that a scrape sent
        # before is too stale to matter (scrapes failing or off).
        oldest = max(self.scrape_sent_at, now - _LEFT_WAITING_HORIZON_S)
        while left and left[0][1] <= oldest:
            left.popleft()
        left.append((flight.sent_at, now))

    def load(self, now: float) -> EndpointLoad:
        scan = self.scan or _EMPTY
        sent_at, answered = self.scrape_sent_at, self.scrape_answered_at
        queued = 0
        newer = 0
        streams_seen = 0  # streams without a first byte the scrape may count as waiting
        plain_seen = 0
        # Ours the scrape may count waiting: sent before its answer came (the engine may have
        # taken a request in before answering a scrape sent earlier), still waiting then.
        ours = 0
        plain: list[Flight] = []
        for flight in self.flights:
            seen = flight.sent_at <= sent_at
            if flight.waiting_first_byte:
                ours += flight.sent_at <= answered
                if flight.streamed:
                    queued += flight.prefill_tokens
                    streams_seen += seen
                else:
                    plain.append(flight)
                    plain_seen += seen
            if not seen:
                newer += 1
        ours += sum(1 for sent, left in self.left_waiting if sent <= answered and left > sent_at)
        if plain:
            # The engine starts requests in order: its waiting ones are the latest sent, less
            # our streams already counted (and it has not counted those sent since the scrape).
            waiting = max(int(scan.waiting) - streams_seen, 0)
            ahead = waiting + len(plain) - plain_seen
            plain.sort(key=lambda f: f.sent_at, reverse=True)
            queued += sum(f.prefill_tokens for f in plain[:ahead])
        return EndpointLoad(
            running=scan.running,
            waiting=scan.waiting + newer,
            kv_usage=scan.kv_usage,
            queued_prompt_tokens=float(queued),
            unaccounted_waiting=max(scan.waiting - ours, 0.0),
            prefill_tokens_per_s=self.rates.prefill_tokens_per_s,
            decode_step_s=self.rates.decode_step_s,
            # From when the scrape was sent: the page shows the engine somewhere in between.
            age_s=now - sent_at if self.scan is not None else float("inf"),
            kv_capacity_tokens=self.kv_capacity,
        )


_EMPTY = MetricsScan()
