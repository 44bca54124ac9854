"""When the shared quota store goes away: local limits (fail-open) or 503 (fail-closed), said in
metrics, logs and /health, and exact limits again once it is back."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trunkline.quota.enforcer import QuotaEnforcer
from trunkline.quota.fallback import FallbackQuotaStore
from trunkline.quota.limits import CONCURRENCY, DAY_TOKENS, REQUESTS, Limits
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.store import Outcome, ReserveRequest, Scope, StoreUnavailable, Ticket
from trunkline.settings import QuotaSettings
from unit.quota.conftest import Gateway, ms
from unit.quota.flaky_store import Flaky, RanButTimedOut, statuses
from unit.quota.test_quota_gateway import CHAT, RESERVED, error_of, open_stream


def metric(gw: Gateway, line: str) -> bool:
    return line in gw.client.get("/metrics").text


def test_fail_open_limits_each_process_to_its_share_and_says_so(
    make_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky, local_share=0.5)
    gw.limit(key=Limits(requests_per_minute=4))
    assert statuses(gw, 1) == [200]

    flaky.down = True
    with caplog.at_level(logging.WARNING, logger="trunkline.quota.fallback"):
        assert statuses(gw, 3) == [200, 200, 429], "half of 4 per minute, decided locally"

    assert metric(gw, "trunkline_quota_store_degraded 1.0")
    assert metric(gw, 'trunkline_quota_store_errors_total{operation="reserve"} 1.0')
    assert metric(gw, 'outcome="rate_limited"} 1.0') and metric(gw, 'decided_by="local"')
    assert gw.client.get("/health").json()["quota_store"] == "degraded"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "limiting per process" in errors[0].getMessage()

    flaky.down = False
    gw.clock.advance(1000)  # the next probe
    assert statuses(gw, 1) == [200]
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]
    assert statuses(gw, 1) == [429], "the store's count, the two decided locally in: 1 + 2 + 1"
    assert metric(gw, "trunkline_quota_store_degraded 0.0")
    assert gw.client.get("/health").json()["quota_store"] == "ok"
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_while_away_budgets_continue_from_what_was_left(make_gateway: Any) -> None:
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky)
    gw.limit(tenant=Limits(tokens_per_day=24 + 38 + 10))  # room for one more request, barely
    assert statuses(gw, 1) == [200]
    flaky.down = True
    assert statuses(gw, 1) == [429], "the day's budget is as spent as the store last said"


def test_what_was_used_while_away_counts_in_the_stores_budgets_once_it_is_back(
    make_gateway: Any,
) -> None:
    """Otherwise the store forgets the outage: a tenant spends what was left of its day during
    it, and the same again after."""
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky)
    gw.limit(tenant=Limits(tokens_per_day=100))
    assert statuses(gw, 1) == [200]
    flaky.down = True
    assert statuses(gw, 1) == [200], "decided locally"
    open_during = gw.call(open_stream, gw)

    flaky.down = False
    gw.clock.advance(1000)
    assert statuses(gw, 1) == [200]
    gw.call(open_during.aclose)  # a local stream that ends after the outage counts too
    gw.call(gw.service.quota.drain)
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]

    assert gw.counters("tenant")[DAY_TOKENS] == 3 * 24 + 18, "every request's usage, once"
    assert gw.counters("tenant")[REQUESTS] == 4
    assert statuses(gw, 1) == [429], "the day is spent, the outage included"


def test_a_request_over_this_gateways_share_but_within_the_limit_is_told_to_retry(
    make_gateway: Any,
) -> None:
    """With a local share of 1/4 (four replicas), a request the store would take may not fit
    one gateway's share: it was told it was too large, never to retry (`x-should-retry:
    false`), with numbers it fitted ("Limit 114, Used 0, Requested 38"), and headers saying all
    of the limit was left."""
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky, local_share=0.25)
    gw.limit(key=Limits(tokens_per_minute=RESERVED * 3))
    flaky.down = True

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "x-should-retry" not in refused.headers
    assert refused.headers["retry-after"] == "1" and refused.headers["retry-after-ms"] == "1000"
    share = RESERVED * 3 // 4
    assert f"Limit {share}, Used 0, Requested {RESERVED}" in error["message"]
    assert "quota store is unreachable" in error["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == str(share)
    assert refused.headers["x-ratelimit-remaining-tokens"] == str(share)

    gw.limit(key=Limits(tokens_per_day=RESERVED * 3))
    refused = gw.post(CHAT)
    error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert refused.headers["retry-after"] == "1", "a budget's share alike"
    assert f"Limit {share}, Used 0, Requested {RESERVED}" in refused.json()["error"]["message"]

    gw.limit(key=Limits(tokens_per_minute=RESERVED - 1))
    refused = gw.post(CHAT)
    error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert refused.headers["x-should-retry"] == "false", "over the whole limit: never fits"


def test_a_budget_spent_when_the_store_last_answered_is_insufficient_quota_while_away(
    make_gateway: Any,
) -> None:
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky, local_share=0.5)
    gw.limit(tenant=Limits(tokens_per_day=24 + RESERVED))
    assert statuses(gw, 2) == [200, 200]
    gw.limit(tenant=Limits(tokens_per_day=2 * 24))  # what the two used: spent
    assert statuses(gw, 1) == [429]
    flaky.down = True

    refused = gw.post(CHAT)

    error_of(refused, 429, "insufficient_quota", "insufficient_quota")
    assert refused.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("budget", "spent_at", "away_at"),
    [
        ("tokens_per_day", ms(2027, 6, 15, 23, 59, 0), ms(2027, 6, 16, 0, 0, 30)),
        ("tokens_per_month", ms(2027, 6, 30, 23, 59, 0), ms(2027, 7, 1, 0, 0, 30)),
    ],
)
def test_a_budget_spent_before_a_new_window_is_not_spent_in_it_while_away(
    make_gateway: Any, budget: str, spent_at: int, away_at: int
) -> None:
    """The store went away once a day's (a month's) budget was spent, and stayed away past
    midnight: the new day's requests were refused as insufficient_quota, 'It resets at' the
    next midnight, for as long as the outage lasted, from a count of the day before."""
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky, now_ms=spent_at)
    gw.limit(tenant=Limits(**{budget: 24 + RESERVED}))
    assert statuses(gw, 2) == [200, 200]
    gw.limit(tenant=Limits(**{budget: 2 * 24}))  # what the two used: spent
    assert statuses(gw, 1) == [429]
    flaky.down = True
    gw.clock.advance(away_at - spent_at)

    assert statuses(gw, 2) == [200, 429], "decided locally, from the new window's whole budget"


def test_fail_closed_refuses_with_503_until_the_store_is_back(make_gateway: Any) -> None:
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky, on_store_failure="closed")
    gw.limit(key=Limits(requests_per_minute=100))
    flaky.down = True

    refused = gw.post(CHAT)

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "quota_unavailable"
    assert refused.headers["retry-after"] == "1" and refused.headers["retry-after-ms"] == "1000"
    assert gw.upstream == []
    flaky.down = False
    gw.clock.advance(1000)
    assert statuses(gw, 1) == [200]


def test_settles_that_missed_the_store_are_replayed_when_it_returns(make_gateway: Any) -> None:
    flaky = Flaky()
    gw: Gateway = make_gateway(store=flaky)
    gw.limit(key=Limits(tokens_per_day=10_000, concurrent_requests=5))
    events = gw.call(open_stream, gw)
    flaky.down = True
    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    assert gw.counters()[DAY_TOKENS] == 38, "still the whole reservation"

    flaky.down = False
    gw.clock.advance(1000)
    assert statuses(gw, 1) == [200]
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]

    assert gw.counters()[REQUESTS] == 2
    assert gw.counters()[DAY_TOKENS] == 18 + 24, "the hung-up stream's refund arrived"


class Hanging(Flaky):
    """A store that hangs (a frozen Redis) until ``wake`` is set, then refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.wake = asyncio.Event()
        self.calls = 0

    async def reserve(self, request: ReserveRequest) -> Outcome:
        self.calls += 1
        await self.wake.wait()
        raise StoreUnavailable("timed out")


async def test_while_degraded_one_request_probes_and_the_others_decide_locally() -> None:
    hanging = Hanging()
    store = FallbackQuotaStore(hanging, QuotaMetrics(CollectorRegistry()), probe_every_ms=1000)
    scopes = (Scope("key", "k", Limits(requests_per_minute=100).vector()),)

    def request(n: int, at_ms: int) -> ReserveRequest:
        return ReserveRequest(f"r{n}", "t", scopes, 10, 0, at_ms, 60_000, 3_600_000)

    hanging.wake.set()
    assert (await store.reserve(request(0, 0))).local  # the outage starts
    hanging.wake.clear()
    probe = asyncio.ensure_future(store.reserve(request(1, 1_000)))  # due: it probes, and hangs
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(store.reserve(request(n, 1_000 + n))) for n in range(2, 6)]
    for _ in range(10):  # let them run as far as they can while the probe still hangs
        await asyncio.sleep(0)
    assert [task.done() for task in others] == [True] * 4, "they waited on the store too"
    assert all(task.result().local for task in others)
    assert hanging.calls == 2, "only the probe waited on the store"
    hanging.wake.set()
    assert (await probe).local


def test_a_reservation_that_timed_out_but_was_made_is_given_back_when_the_store_returns(
    make_gateway: Any,
) -> None:
    store = RanButTimedOut()
    gw: Gateway = make_gateway(store=store)
    gw.limit(key=Limits(tokens_per_day=10_000, concurrent_requests=1))
    store.down = True
    assert statuses(gw, 1) == [200], "decided locally"
    assert gw.counters()[DAY_TOKENS] == 38 and gw.counters()[CONCURRENCY] == 1, "held in Redis"

    store.down = False
    gw.clock.advance(1000)
    assert statuses(gw, 1) == [429], "the probe that finds it back still meets the slot"
    gw.call(gw.service.quota.store.replayed)  # type: ignore[attr-defined]

    assert gw.counters()[CONCURRENCY] == 0, "given back"
    assert gw.counters()[DAY_TOKENS] == 24, "what it used, decided locally, counts; no more"
    assert statuses(gw, 1) == [200]


class RefusesOneSettle(Flaky):
    """A store that, back from an outage, fails one request's replayed settle with an error
    that is no outage (a bug, a value it cannot take)."""

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        if not self.down and ticket.request_id == "r1":
            raise ValueError("value is not an integer or out of range")
        await super().settle(ticket, tokens, cost, now_ms)


async def test_a_settle_that_cannot_be_replayed_is_dropped_and_the_others_still_are() -> None:
    store = RefusesOneSettle()
    registry = CollectorRegistry()
    fallback = FallbackQuotaStore(store, QuotaMetrics(registry), probe_every_ms=1000)
    scopes = (Scope("key", "k", Limits(tokens_per_day=1_000).vector()),)

    def request(n: int, at_ms: int) -> ReserveRequest:
        return ReserveRequest(f"r{n}", "t", scopes, 100, 0, at_ms, 60_000, 3_600_000)

    tickets = [(await fallback.reserve(request(n, 0))).ticket for n in (1, 2)]
    store.down = True
    for ticket in tickets:
        assert ticket is not None
        await fallback.settle(ticket, 10, 0, 1)  # missed: kept for later
    store.down = False
    assert not (await fallback.reserve(request(3, 2_000))).local  # back: the replay starts
    await fallback.replayed()

    [day] = await store.usage("t", [("key", "k")], 2_000)
    # r1 stays charged its reservation (100), r2 was refunded to what it used (10), r3 holds 100.
    assert day[DAY_TOKENS] == 100 + 10 + 100
    assert registry.get_sample_value("trunkline_quota_settles_dropped_total") == 1.0


async def test_an_idle_gateway_learns_the_store_is_back_from_its_heartbeat() -> None:
    """With no request to probe it, the degraded gauge (and an alert on it) stayed up after
    the store came back, until the next request. Driven through the enforcer's heartbeat, with
    no request in flight: it skipped the store when it had no lease to renew."""
    flaky, registry, now = Flaky(), CollectorRegistry(), [0]
    store = FallbackQuotaStore(flaky, QuotaMetrics(registry), probe_every_ms=1000)
    enforcer = QuotaEnforcer(
        store, QuotaSettings(), QuotaMetrics(CollectorRegistry()), lambda: now[0]
    )
    scopes = (Scope("key", "k", Limits(requests_per_minute=100).vector()),)
    flaky.down = True
    await store.reserve(ReserveRequest("r0", "t", scopes, 10, 0, 0, 60_000, 3_600_000))
    assert store.degraded and registry.get_sample_value("trunkline_quota_store_degraded") == 1

    async def beat(at_ms: int) -> bool:
        now[0] = at_ms
        await enforcer.renew_leases()
        return store.degraded

    assert await beat(500)  # before the probe is due: still degraded
    assert await beat(1_500)  # due, but the store is still away
    flaky.down = False
    assert await beat(2_000)  # back, but the next probe is not due yet
    assert not await beat(2_600)
    assert registry.get_sample_value("trunkline_quota_store_degraded") == 0
