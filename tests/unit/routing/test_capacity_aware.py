"""Endpoints of different sizes: the approximate prefix index sized from each endpoint's KV
capacity, load shared by nominal throughput, and the fleet's snapshot reporting both."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest
from tests.unit.routing.helpers import endpoint, request, text

from trunkline.fleet import FleetSpec, PoolSpec, build_snapshot
from trunkline.gateway.routing import ApproxPrefixIndex, Balance, Candidate, endpoint_view
from trunkline.gateway.routing.capacity import relative_capacity
from trunkline.gateway.routing.load_scorers import QueueDepthScorer
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer

BLOCK_TOKENS = 16


def test_the_index_remembers_as_many_blocks_as_each_endpoint_caches() -> None:
    small = replace(endpoint("small"), kv_capacity_tokens=2 * BLOCK_TOKENS)
    large = replace(endpoint("large"), kv_capacity_tokens=8 * BLOCK_TOKENS)
    scorer = PrefixAffinityScorer(ApproxPrefixIndex(capacity_tokens=100 * BLOCK_TOKENS))
    for target in (small, large):
        scorer.routed(request(text("a", "b")), target)
        scorer.routed(request(text("c", "d")), target)
    # The small endpoint has room for one two-block prompt: "a b" is gone there, not on the
    # large one; the fallback (100 blocks) applies to neither.
    assert scorer.score(request(text("a", "b")), [small, large]) == [0.0, 1.0]
    assert scorer.score(request(text("c", "d")), [small, large]) == [1.0, 1.0]


def test_an_endpoint_of_unknown_capacity_or_a_fixed_index_uses_the_profile_figure() -> None:
    unknown = endpoint("unknown")
    reported = replace(endpoint("reported"), kv_capacity_tokens=2 * BLOCK_TOKENS)
    fixed = PrefixAffinityScorer(ApproxPrefixIndex(8 * BLOCK_TOKENS, from_endpoint=False))
    for target in (unknown, reported):
        fixed.routed(request(text("a", "b")), target)
        fixed.routed(request(text("c", "d")), target)
    assert fixed.score(request(text("a", "b")), [unknown, reported]) == [1.0, 1.0]
    assert ApproxPrefixIndex(7).capacity_of(unknown) == 7


def test_the_gateway_view_reports_a_pools_kv_capacity_and_zero_as_unknown() -> None:
    snapshot = build_snapshot(FleetSpec.uniform("l40s", 1), {})
    pool = snapshot.pools["l40s-pool"]
    view = endpoint_view(Candidate(pool, pool.endpoints[0]))
    assert view.kv_capacity_tokens == pool.kv_capacity_tokens > 0
    gateway_pool = msgspec.structs.replace(pool, kv_capacity_tokens=0)
    unknown = endpoint_view(Candidate(gateway_pool, pool.endpoints[0]))
    assert unknown.kv_capacity_tokens is None


def test_host_kv_offload_multiplies_what_each_replica_caches() -> None:
    plain = build_snapshot(FleetSpec.uniform("h100", 2), {}).pools["h100-pool"]
    offload = build_snapshot(FleetSpec.uniform("h100", 2, kv_scale=4), {}).pools["h100-pool"]
    assert offload.kv_capacity_tokens == pytest.approx(4 * plain.kv_capacity_tokens, rel=1e-4)
    assert PoolSpec("p", "h100", kv_scale=4).engine_profile.kv_cache_tokens == pytest.approx(
        offload.kv_capacity_tokens
    )
    with pytest.raises(ValueError, match="kv_scale"):
        PoolSpec("p", "h100", kv_scale=0.5)


def test_the_fleet_snapshot_prices_each_pool_and_rates_an_h100_above_an_l40s() -> None:
    spec = FleetSpec(pools=(PoolSpec("fast", "h100"), PoolSpec("cheap", "l40s")))
    pools = build_snapshot(spec, {}).pools
    assert (pools["fast"].cost_per_hour, pools["cheap"].cost_per_hour) == (3.0, 1.0)
    fast, cheap = pools["fast"].tokens_per_s, pools["cheap"].tokens_per_s
    assert fast is not None and cheap is not None and fast > 2 * cheap


@pytest.mark.parametrize(
    ("rates", "weights"),
    [
        ([300.0, 100.0], [1.5, 0.5]),
        ([100.0, 100.0, 100.0], [1.0, 1.0, 1.0]),
        ([300.0, None], [1.0, 1.0]),  # one unknown: requests counted alike
        ([None, None], [1.0, 1.0]),
    ],
)
def test_relative_capacity(rates: list[float | None], weights: list[float]) -> None:
    views = [endpoint(f"e{i}", tokens_per_s=rate) for i, rate in enumerate(rates)]
    assert relative_capacity(views) == weights


def test_a_replica_three_times_as_fast_takes_three_times_the_requests_before_saturating() -> None:
    balance = Balance(load_factor=1.25, headroom=0)
    # 16 in flight plus the next one, over weights 1.5 and 0.5: fair shares 12.75 and 4.25.
    assert balance.saturated([12, 4], [1.5, 0.5]) == [False, False]
    assert balance.saturated([12, 6], [1.5, 0.5]) == [False, True]
    # Counted alike, the same loads saturate the fast replica instead.
    assert balance.saturated([12, 4]) == [True, False]


def test_queue_depth_compares_queues_per_unit_of_throughput() -> None:
    fast = endpoint("fast", running=6, tokens_per_s=300.0)
    slow = endpoint("slow", running=3, tokens_per_s=100.0)
    assert QueueDepthScorer().score(request(), [fast, slow]) == [1.0, 0.0]
