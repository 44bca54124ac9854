"""Requests in flight across a quota store's outage: the slots they hold in the store once it
is back (leases renewed, reservations made but timed out, requests decided locally meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from trunkline.quota.fallback import FallbackQuotaStore
from trunkline.quota.limits import CONCURRENCY, DAY_TOKENS, REQUESTS, Limits
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.store import Outcome, ReserveRequest, Scope, Ticket
from unit.quota.conftest import Gateway
from unit.quota.flaky_store import Flaky, RanButTimedOut, statuses
from unit.quota.test_quota_gateway import CHAT, open_stream


def _recover(gw: Gateway, flaky: Flaky) -> None:
    """The store comes back: the next heartbeat's probe finds it (no request needed)."""
    flaky.down = False
    gw.clock.advance(1000)
    gw.call(gw.service.quota.renew_leases)
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]
    assert not gw.service.quota.degraded


def test_a_request_in_flight_through_an_outage_longer_than_its_lease_keeps_its_slot(
    make_gateway: Any,
) -> None:
    """Its lease expired in the store while the gateway could not renew it, and a renewal
    only extended leases the store still held: once the store was back the request ran on
    uncounted, and the scope admitted one request more than its limit until it ended."""
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky)
    gw.limit(key=Limits(concurrent_requests=1))
    events = gw.call(open_stream, gw)
    flaky.down = True
    gw.clock.advance(61_000)  # past lease_s (60 s) without a renewal reaching the store
    gw.call(gw.service.quota.renew_leases)  # the heartbeat finds the store away
    assert gw.service.quota.degraded

    flaky.down = False
    gw.clock.advance(1000)
    # The next request probes the store and finds it back: the store decides it, and must
    # count the stream still in flight.
    assert gw.post(CHAT).status_code == 429, "the only slot is still the stream's"
    assert not gw.service.quota.degraded
    assert gw.counters()[CONCURRENCY] == 1

    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    assert gw.counters()[CONCURRENCY] == 0, "freed when it ended: nothing leaked"
    assert gw.post(CHAT).status_code == 200


def test_a_request_admitted_locally_holds_its_slot_in_the_store_once_it_is_back(
    make_gateway: Any,
) -> None:
    """Admitted by this gateway's own limiter, it reached the store only when it ended: until
    then the store's limit did not count it, and other requests took its slot."""
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky)
    gw.limit(key=Limits(concurrent_requests=1))
    flaky.down = True
    events = gw.call(open_stream, gw)  # decided locally
    gw.clock.advance(120_000)  # an outage of any length

    _recover(gw, flaky)
    assert gw.counters()[CONCURRENCY] == 1
    assert gw.post(CHAT).status_code == 429, "the only slot is the stream's"

    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]
    assert gw.counters()[CONCURRENCY] == 0, "freed when it ended: nothing leaked"
    assert gw.post(CHAT).status_code == 200


def test_a_reservation_that_timed_out_but_was_made_is_the_slot_of_its_request_in_flight(
    make_gateway: Any,
) -> None:
    """Its reserve ran in the store although the call timed out, and the request was admitted
    locally: that reservation is its slot once the store is back, not given back under it."""
    store = RanButTimedOut()
    gw: Gateway = make_gateway(store=store)
    gw.limit(key=Limits(tokens_per_day=10_000, concurrent_requests=1))
    store.down = True
    events = gw.call(open_stream, gw)  # decided locally; held in the store all the same

    _recover(gw, store)
    assert gw.counters()[CONCURRENCY] == 1
    assert gw.post(CHAT).status_code == 429, "the only slot is the stream's"

    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]
    assert gw.counters()[CONCURRENCY] == 0
    assert gw.counters()[DAY_TOKENS] == 18, "what it used (the prompt), counted once"


def test_a_reservation_that_timed_out_but_was_made_counts_its_request_once(
    make_gateway: Any,
) -> None:
    """Its request, admitted locally, ended during the outage. Once the store was back the
    reservation was given back (settled at nothing, so gone), then the request's replay
    reserved it anew: the key's requests per minute counted it twice."""
    store = RanButTimedOut()
    gw: Gateway = make_gateway(store=store)
    gw.limit(key=Limits(requests_per_minute=10, tokens_per_day=10_000))
    store.down = True
    assert statuses(gw, 1) == [200], "decided locally; held in the store all the same"

    _recover(gw, store)

    assert gw.counters()[REQUESTS] == 1, "one request"
    assert gw.counters()[DAY_TOKENS] == 24, "what it used"
    assert gw.counters()[CONCURRENCY] == 0


class RefusesOneReservation(Flaky):
    """A store that, back from an outage, fails one request's reservation with an error that is
    no outage (a bug, a value it cannot take)."""

    async def reserve(self, request: ReserveRequest) -> Outcome:
        if not self.down and request.request_id == "r1":
            raise ValueError("value is not an integer or out of range")
        return await super().reserve(request)


async def test_a_request_in_flight_the_store_cannot_take_does_not_keep_it_degraded() -> None:
    """Requests decided locally are reserved in the store as it comes back. One it refused
    with an error that is no outage failed every probe: the store stayed degraded (limits per
    process) for as long as that request ran, and each request that probed it failed (500)."""
    store = RefusesOneReservation()
    registry = CollectorRegistry()
    fallback = FallbackQuotaStore(store, QuotaMetrics(registry), probe_every_ms=1000)
    scopes = (Scope("key", "k", Limits(concurrent_requests=5).vector()),)

    def request(n: int, at_ms: int) -> ReserveRequest:
        return ReserveRequest(f"r{n}", "t", scopes, 100, 0, at_ms, 60_000, 3_600_000)

    store.down = True
    assert (await fallback.reserve(request(1, 0))).local  # decided locally, still in flight
    assert (await fallback.reserve(request(2, 0))).local
    store.down = False

    outcome = await fallback.reserve(request(3, 2_000))

    assert not outcome.local and outcome.ticket is not None, "decided by the store, back"
    assert registry.get_sample_value("trunkline_quota_store_degraded") == 0
    [used] = await store.usage("t", [("key", "k")], 2_000)
    assert used[CONCURRENCY] == 2, "r2's slot, and r3's"


class SlowToRenew(Flaky):
    """A store back from an outage whose renewals answer only once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.answer = asyncio.Event()

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        self._reachable()
        self.renewing.set()
        await self.answer.wait()
        await self.inner.renew(tickets, now_ms, lease_ms)


async def test_a_request_decided_locally_while_the_store_is_found_back_gets_its_slot_there() -> (
    None
):
    """The store answered the probe; while the requests in flight were given their slots there
    (a call each, then their leases renewed), requests arriving meanwhile were still decided
    locally, and were left out: the store never counted them until they ended, and a scope
    admitted as many requests over its concurrent_requests."""
    store = SlowToRenew()
    fallback = FallbackQuotaStore(store, QuotaMetrics(CollectorRegistry()), probe_every_ms=1000)
    scopes = (Scope("key", "k", Limits(concurrent_requests=3).vector()),)

    def request(n: int, at_ms: int) -> ReserveRequest:
        return ReserveRequest(f"r{n}", "t", scopes, 100, 0, at_ms, 60_000, 3_600_000)

    store.down = True
    assert (await fallback.reserve(request(1, 0))).local  # the outage starts
    store.down = False
    finding = asyncio.ensure_future(fallback.reserve(request(2, 2_000)))  # probes: back
    await store.renewing.wait()
    meanwhile = await fallback.reserve(request(3, 2_001))
    assert meanwhile.local, "decided locally while the store is being found back"
    store.answer.set()
    assert (await finding).verdict.admitted
    await fallback.replayed()

    [used] = await store.usage("t", [("key", "k")], 2_002)
    assert used[CONCURRENCY] == 3, "r1's slot, r2's and r3's"
    refused = await fallback.reserve(request(4, 2_002))
    assert not refused.local and not refused.verdict.admitted, "the limit of 3 is full"
