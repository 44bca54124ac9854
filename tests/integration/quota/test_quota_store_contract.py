"""One contract for the quota store, run on the in-memory and the Redis implementation.

Times are injected (epoch ms), never slept: windows, leases and deadlines move because the test
says the clock moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from trunkline.quota.estimate import completion_budget
from trunkline.quota.limits import (
    CONCURRENCY,
    DAY_TOKENS,
    LIMIT_NAMES,
    MICRO,
    MONTH_COST,
    MONTH_TOKENS,
    REQUESTS,
    TOKENS,
    Limits,
    Price,
)
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.redis_store import RedisQuotaStore, connect
from trunkline.quota.store import QuotaStore, ReserveRequest, Scope

LEASE_MS = 60_000
TTL_MS = 3_600_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


NOON = ms(2027, 6, 15, 12, 0, 0)


NO_LIMITS = Limits()


def scopes(
    key: Limits = NO_LIMITS, tenant: Limits = NO_LIMITS, *, key_id: str = "k1"
) -> tuple[Scope, ...]:
    return (Scope("key", key_id, key.vector()), Scope("tenant", "t1", tenant.vector()))


def request(
    rid: str,
    now: int = NOON,
    tokens: int = 100,
    cost: int = 0,
    scoped: tuple[Scope, ...] = scopes(),
    tenant: str = "t1",
) -> ReserveRequest:
    return ReserveRequest(rid, tenant, scoped, tokens, cost, now, LEASE_MS, TTL_MS)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[QuotaStore]:
    if request.param == "memory":
        yield InMemoryQuotaStore()
        return
    url = request.getfixturevalue("redis_url")
    redis_store = RedisQuotaStore(aioredis.Redis.from_url(url), prefix="t")
    yield redis_store
    await redis_store.close()


async def used(store: QuotaStore, now: int = NOON, tenant: str = "t1") -> list[Any]:
    return await store.usage(tenant, [("key", "k1"), ("tenant", "t1")], now)


async def test_an_admitted_request_takes_its_share_of_every_counter(store: QuotaStore) -> None:
    limited = scopes(Limits(requests_per_minute=10), Limits(tokens_per_month=10_000))
    outcome = await store.reserve(request("r1", tokens=120, cost=7, scoped=limited))

    assert outcome.verdict.admitted and outcome.ticket is not None
    assert outcome.used == ((1, 120, 1, 120, 120, 7), (1, 120, 1, 120, 120, 7))
    assert await used(store) == [(1, 120, 1, 120, 120, 7)] * 2
    assert await store.usage("t1", [("key", "other")], NOON) == [(0, 0, 0, 0, 0, 0)]


@pytest.mark.parametrize(
    ("field", "limit", "admitted"),
    [
        (REQUESTS, 3, 3),
        (TOKENS, 250, 2),
        (CONCURRENCY, 2, 2),
        (DAY_TOKENS, 350, 3),
        (MONTH_TOKENS, 199, 1),
        (MONTH_COST, 25, 2),
    ],
)
async def test_every_limit_is_reached_and_refuses_without_counting(
    store: QuotaStore, field: int, limit: int, admitted: int
) -> None:
    limits = Limits(**{LIMIT_NAMES[field]: limit})
    outcomes = [
        await store.reserve(request(f"r{i}", tokens=100, cost=10, scoped=scopes(tenant=limits)))
        for i in range(admitted + 2)
    ]

    assert [o.verdict.admitted for o in outcomes] == [True] * admitted + [False] * 2
    refused = outcomes[-1].verdict
    assert (refused.limit, refused.scope, refused.never_fits) == (field, 1, False)
    counters = await used(store)
    assert counters[1][REQUESTS] == admitted, "a refused request must not be counted"
    assert counters[0] == counters[1], "nor counted in the scope that would have admitted it"
    # What the gateway's refusal says was used (its message, x-ratelimit-remaining-*).
    assert list(outcomes[-1].used) == counters


async def test_budgets_are_checked_before_rate_limits_and_the_narrow_scope_first(
    store: QuotaStore,
) -> None:
    spent = scopes(Limits(requests_per_minute=1, tokens_per_day=100), Limits(tokens_per_month=100))
    await store.reserve(request("r1", tokens=100, scoped=spent))
    verdict = (await store.reserve(request("r2", tokens=1, scoped=spent))).verdict

    assert (verdict.limit, verdict.scope) == (MONTH_TOKENS, 1)
    narrow_first = scopes(Limits(tokens_per_minute=150), Limits(tokens_per_minute=150))
    verdict = (await store.reserve(request("r3", tokens=100, scoped=narrow_first))).verdict
    assert (verdict.limit, verdict.scope) == (TOKENS, 0)


async def test_a_request_larger_than_the_limit_never_fits(store: QuotaStore) -> None:
    verdict = (
        await store.reserve(request("r1", tokens=501, scoped=scopes(Limits(tokens_per_minute=500))))
    ).verdict
    assert (verdict.limit, verdict.never_fits) == (TOKENS, True)
    assert await used(store) == [(0, 0, 0, 0, 0, 0)] * 2


async def test_settle_refunds_down_to_actual_usage_and_frees_the_slot(store: QuotaStore) -> None:
    limited = scopes(Limits(concurrent_requests=1))
    ticket = (await store.reserve(request("r1", tokens=500, cost=50, scoped=limited))).ticket
    assert ticket is not None
    assert not (await store.reserve(request("r2", scoped=limited))).verdict.admitted

    await store.settle(ticket, 120, 12, NOON + 5_000)

    assert await used(store, NOON + 5_000) == [(1, 120, 0, 120, 120, 12)] * 2
    assert (await store.reserve(request("r3", NOON + 5_000, scoped=limited))).verdict.admitted


async def test_settle_charges_more_than_reserved_when_more_was_used(store: QuotaStore) -> None:
    ticket = (await store.reserve(request("r1", tokens=100, cost=1))).ticket
    assert ticket is not None
    await store.settle(ticket, 130, 3, NOON)
    assert (await used(store))[0] == (1, 130, 0, 130, 130, 3)


async def test_settling_twice_counts_once(store: QuotaStore) -> None:
    ticket = (await store.reserve(request("r1", tokens=400))).ticket
    assert ticket is not None
    await store.settle(ticket, 100, 0, NOON)
    await store.settle(ticket, 100, 0, NOON)
    await store.settle(ticket, 0, 0, NOON)
    assert (await used(store))[0] == (1, 100, 0, 100, 100, 0)


async def test_reserving_again_under_a_held_reservations_id_counts_it_once(
    store: QuotaStore,
) -> None:
    """A client resends a reserve that timed out (redis-py retries once), and Redis may have
    run the first call: the second must not take the request's share a second time."""
    limited = scopes(Limits(requests_per_minute=10, concurrent_requests=5))
    first = await store.reserve(request("r1", tokens=400, cost=7, scoped=limited))
    again = await store.reserve(request("r1", NOON + 5, tokens=400, cost=7, scoped=limited))

    assert again.verdict.admitted and again.ticket == first.ticket
    assert again.used[0] == first.used[0] == (1, 400, 1, 400, 400, 7)
    assert again.ticket is not None
    await store.settle(again.ticket, 100, 2, NOON + 10)
    assert (await used(store, NOON + 10))[0] == (1, 100, 0, 100, 100, 2)


async def test_the_largest_completion_budget_is_reserved_and_counted(store: QuotaStore) -> None:
    """A client may ask for ``max_tokens`` 10**20 and ``n`` 10**6: the reservation must stay one
    every store counts (Redis's script failed on it: a 500 for a tenant without a token limit)."""
    tokens = completion_budget("chat", {"max_tokens": 10**20, "n": 10**6}, cap=4096)
    outcome = await store.reserve(request("r1", tokens=tokens))

    assert outcome.verdict.admitted and outcome.ticket is not None
    assert (await used(store))[0][TOKENS] == tokens
    await store.settle(outcome.ticket, 10, 0, NOON + 10)
    assert (await used(store, NOON + 10))[0][TOKENS] == 10


async def test_the_costliest_reservation_is_settled_to_what_was_used(store: QuotaStore) -> None:
    """The largest completion budget at $60 per million output tokens (a model the catalog
    gives no context length) costs 128,849 dollars: 1.3e14 billionths. Redis's script wrote
    it into the reservation's record as 1.2884901882e+14, which its settle could not read:
    the settle failed and left the reservation charged whole, 2.1 billion tokens of a
    month's budget for a request that used 10."""
    tokens = completion_budget("chat", {"max_tokens": 2**31 - 1}, cap=4096)
    cost = Price(input=60 * MICRO, cached_input=0, output=60 * MICRO).cost(0, 0, tokens)
    outcome = await store.reserve(request("r1", tokens=tokens, cost=cost))
    assert outcome.verdict.admitted and outcome.ticket is not None
    assert await store.held("t1", "key", "k1", NOON) == (tokens, cost, 1)

    await store.settle(outcome.ticket, 10, 600, NOON + 10)

    assert (await used(store, NOON + 10))[0] == (1, 10, 0, 10, 10, 600)


async def test_a_reservation_of_whole_tenths_is_counted_and_settled(store: QuotaStore) -> None:
    """Costs of whole tenths of the currency: 0.30 reserved, 0.10 used (3 x 10^8 and 10^8
    billionths; given back: -2 x 10^8). Redis 7.2.0 to 7.2.4 hand a script's numbers to its
    commands as 3e+08, which INCRBY refuses ('value is not an integer'): such a request was
    refused with an error, and such a settle failed after dropping the reservation, leaving it
    charged whole. (Redis 6, 7.0 and 7.2.5+ write them out: this passes there either way.)"""
    outcome = await store.reserve(request("r1", tokens=100, cost=3 * 10**8))
    assert outcome.ticket is not None
    assert (await used(store))[0][MONTH_COST] == 3 * 10**8

    await store.settle(outcome.ticket, 10, 10**8, NOON + 10)

    assert (await used(store, NOON + 10))[0] == (1, 10, 0, 10, 10, 10**8)


async def test_a_late_settle_corrects_the_window_the_reservation_was_made_in(
    store: QuotaStore,
) -> None:
    ticket = (await store.reserve(request("r1", NOON - 1, tokens=400))).ticket
    assert ticket is not None
    assert (await store.reserve(request("r2", NOON + 10, tokens=50))).verdict.admitted

    await store.settle(ticket, 100, 0, NOON + 30_000)

    this_minute = (await used(store, NOON + 30_000))[0]
    assert this_minute[:3] == (1, 50, 1), "the new minute keeps only its own reservation"
    assert this_minute[DAY_TOKENS] == 150
    assert (await used(store, NOON - 1))[0][:2] == (1, 100), "the old minute got the refund"


async def test_settle_after_the_reservation_deadline_leaves_it_charged(store: QuotaStore) -> None:
    ticket = (await store.reserve(request("r1", tokens=400))).ticket
    assert ticket is not None
    await store.settle(ticket, 10, 0, NOON + TTL_MS)
    counters = (await used(store, NOON + 1000))[0]
    assert counters[DAY_TOKENS] == 400 and counters[CONCURRENCY] == 0


@pytest.mark.parametrize(
    ("before", "after", "same_day", "same_month"),
    [
        (ms(2027, 6, 15, 11, 59, 59) + 999, ms(2027, 6, 15, 12, 0, 0), True, True),
        (ms(2027, 6, 15, 23, 59, 59) + 999, ms(2027, 6, 16, 0, 0, 0), False, True),
        (ms(2027, 6, 30, 23, 59, 59) + 999, ms(2027, 7, 1, 0, 0, 0), False, False),
        (ms(2028, 2, 28, 23, 59, 59), ms(2028, 2, 29, 0, 0, 1), False, True),
        (ms(2028, 2, 29, 23, 59, 59) + 999, ms(2028, 3, 1, 0, 0, 0), False, False),
        (ms(2027, 12, 31, 23, 59, 59) + 999, ms(2028, 1, 1, 0, 0, 0), False, False),
    ],
)
async def test_windows_roll_over_at_utc_minute_day_and_month_edges(
    store: QuotaStore, before: int, after: int, same_day: bool, same_month: bool
) -> None:
    limited = scopes(Limits(tokens_per_minute=100, tokens_per_day=200, tokens_per_month=200))
    assert (await store.reserve(request("r1", before, tokens=100, scoped=limited))).verdict.admitted
    full = await store.reserve(request("r2", before, tokens=1, scoped=limited))
    assert full.verdict.limit == TOKENS

    outcome = await store.reserve(request("r3", after, tokens=100, scoped=limited))

    assert outcome.verdict.admitted, outcome.verdict
    day, month = outcome.used[0][DAY_TOKENS], outcome.used[0][MONTH_TOKENS]
    assert day == (200 if same_day else 100)
    assert month == (200 if same_month else 100)


async def test_a_crashed_gateways_slots_expire_and_renewed_ones_do_not(store: QuotaStore) -> None:
    limited = scopes(Limits(concurrent_requests=2))
    crashed = (await store.reserve(request("r1", scoped=limited))).ticket
    alive = (await store.reserve(request("r2", scoped=limited))).ticket
    assert crashed is not None and alive is not None

    await store.renew([alive], NOON + 40_000, LEASE_MS)
    later = NOON + LEASE_MS + 1

    assert (await used(store, later))[0][CONCURRENCY] == 1
    assert (await store.reserve(request("r3", later, scoped=limited))).verdict.admitted
    assert not (await store.reserve(request("r4", later, scoped=limited))).verdict.admitted


async def test_a_lease_that_expired_while_its_request_ran_is_taken_again_by_a_renewal(
    store: QuotaStore,
) -> None:
    """A gateway cut off from the store for longer than a lease could not renew it; another
    reservation then dropped it. Renewing only leases still held left that request uncounted
    once the gateway was back: the scope admitted one request over its limit."""
    limited = scopes(Limits(concurrent_requests=1))
    running = (await store.reserve(request("r1", scoped=limited))).ticket
    settled = (await store.reserve(request("r2", scoped=scopes(key_id="k2")))).ticket
    assert running is not None and settled is not None
    later = NOON + LEASE_MS + 1
    # Meanwhile another gateway's request came and went: the slot was free (the lease had
    # expired), and its reservation dropped the lease.
    other = (await store.reserve(request("r3", later, scoped=limited))).ticket
    assert other is not None
    await store.settle(other, 0, 0, later)
    await store.settle(settled, 0, 0, later)

    await store.renew([running, settled], later, LEASE_MS)  # back: it still runs

    assert (await used(store, later))[0][CONCURRENCY] == 1
    assert not (await store.reserve(request("r4", later, scoped=limited))).verdict.admitted
    k2 = await store.usage("t1", [("key", "k2")], later)
    assert k2[0][CONCURRENCY] == 0, "a settled request's slot is not taken again"
    await store.settle(running, 0, 0, later)
    assert (await used(store, later))[0][CONCURRENCY] == 0


async def test_what_requests_in_flight_hold_is_read_per_scope(store: QuotaStore) -> None:
    """A budget refused while requests are in flight: spent, or held by them until they
    settle (the gateway answers the two apart)."""
    first = (await store.reserve(request("r1", tokens=500, cost=50))).ticket
    second = (await store.reserve(request("r2", tokens=200, cost=20))).ticket
    other = (await store.reserve(request("r3", tokens=70, scoped=scopes(key_id="k2")))).ticket
    assert first is not None and second is not None and other is not None

    assert await store.held("t1", "key", "k1", NOON) == (700, 70, 2)
    assert await store.held("t1", "tenant", "t1", NOON) == (770, 70, 3)
    await store.settle(first, 120, 12, NOON + 1_000)  # settled: no longer held
    assert await store.held("t1", "key", "k1", NOON + 1_000) == (200, 20, 1)
    assert await store.held("t1", "key", "k9", NOON + 1_000) == (0, 0, 0)
    assert await store.held("t9", "tenant", "t9", NOON + 1_000) == (0, 0, 0)
    # A crashed gateway's requests hold nothing once their leases expired.
    assert await store.held("t1", "key", "k1", NOON + LEASE_MS + 1) == (0, 0, 0)


async def test_concurrent_reservations_never_overshoot(store: QuotaStore) -> None:
    limited = scopes(tenant=Limits(tokens_per_minute=1000, concurrent_requests=50))
    outcomes = await asyncio.gather(
        *(store.reserve(request(f"r{i}", tokens=100, scoped=limited)) for i in range(40))
    )
    assert sum(o.verdict.admitted for o in outcomes) == 10
    assert (await used(store))[1][TOKENS] == 1000


async def test_tenants_and_keys_are_counted_apart(store: QuotaStore) -> None:
    limited = scopes(Limits(requests_per_minute=1), key_id="k1")
    other_key = scopes(Limits(requests_per_minute=1), key_id="k2")
    assert (await store.reserve(request("r1", scoped=limited))).verdict.admitted
    assert (await store.reserve(request("r2", scoped=other_key))).verdict.admitted
    assert (await store.reserve(request("r3", scoped=limited, tenant="t2"))).verdict.admitted
    assert not (await store.reserve(request("r4", scoped=limited))).verdict.admitted


async def test_a_probe_answers_while_the_store_takes_writes(store: QuotaStore) -> None:
    """How a gateway learns the store is back: a probe that answers, on either store."""
    await store.probe(NOON)
    assert await used(store) == [(0, 0, 0, 0, 0, 0)] * 2, "and counts nothing"


async def test_a_burst_beyond_the_gateways_connections_waits_for_one(redis_url: str) -> None:
    """The gateway's client (``connect``): redis-py's own pool refused the 101st call at once
    ("Too many connections"), so a burst of requests read as Redis being down (fail-closed:
    503 quota_unavailable for all but 100 of them)."""
    # A wait past POOL_WAIT_S: 400 calls on a loaded machine once outlasted it (CI); what this
    # pins is that they wait at all.
    store = RedisQuotaStore(connect(redis_url, 30.0), prefix="t")
    many = [request(f"r{i}", scoped=scopes(Limits(requests_per_minute=1000))) for i in range(400)]

    outcomes = await asyncio.gather(*(store.reserve(r) for r in many))

    assert all(outcome.verdict.admitted for outcome in outcomes)
    assert (await used(store))[0][REQUESTS] == 400
    await store.close()
