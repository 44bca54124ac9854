"""Property: a tenant's request never runs outside its regions (nor on a burst pool its tier may
not use, nor on a pool placed for other tiers), whatever the loads, the cached prefixes, the
pools' placement by prompt length and the failures, even when the caller walks down the ranking
or re-ranks after ejecting the endpoints that failed."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.routing.helpers import endpoint, request, text

from trunkline.gateway.routing import (
    POLICIES,
    EndpointView,
    PromptRange,
    Router,
    eligible,
    make_policy,
)
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)

REGIONS = ("eu", "ch", "us", "ap")
PIPELINES = ("prefix-aware", "prefix-only", "precise-prefix", "cost-aware")

endpoints_strategy = st.lists(
    st.builds(
        lambda region, healthy, burst, running, kv, cost, placed, tiers: endpoint(
            "",
            region=region,
            healthy=healthy,
            burst=burst,
            running=running,
            kv=kv,
            cost_per_hour=cost,
            tokens_per_s=1000.0,
            prompt_tokens=placed,
            tiers=tiers,
        ),
        st.sampled_from(REGIONS),
        st.booleans(),
        st.booleans(),
        st.integers(0, 40),
        st.floats(0.0, 1.0),
        st.sampled_from([None, 0.6, 1.0, 3.0]),
        st.sampled_from([None, PromptRange(0, 40), PromptRange(40), PromptRange(100)]),  # of 48
        st.sampled_from([None, ("gold",), ("silver", "bronze"), ("bronze",)]),
    ),
    min_size=1,
    max_size=10,
).map(lambda views: [replace(v, key=f"e{i}") for i, v in enumerate(views)])


@settings(max_examples=150, deadline=None, database=None)
@given(
    policy_name=st.sampled_from(PIPELINES),
    views=endpoints_strategy,
    regions=st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True),
    may_use_burst=st.booleans(),
    tier=st.sampled_from(["gold", "silver", "bronze"]),
    history=st.lists(st.tuples(st.integers(0, 9), st.sampled_from("abc")), max_size=8),
    failures=st.lists(st.booleans(), min_size=10, max_size=10),
    reranks=st.booleans(),
)
def test_no_pipeline_routes_outside_the_residency_regions_even_under_failover(
    policy_name: str,
    views: list[EndpointView],
    regions: list[str],
    may_use_burst: bool,
    tier: str,
    history: list[tuple[int, str]],
    failures: list[bool],
    reranks: bool,
) -> None:
    policy = make_policy(policy_name)
    # Teach the policy prefixes on any endpoint, outside the regions too: affinity must not leak.
    for index, name in history:
        policy.routed(request(text(name, "x")), views[index % len(views)])
    req = request(
        text("a", "x", "y"), regions=tuple(regions), may_use_burst=may_use_burst, tier=tier
    )
    tried: list[EndpointView] = []
    live = list(views)
    ranking = policy.rank(req, live)
    attempt = 0
    while ranking:
        chosen = live[ranking[0]]
        tried.append(chosen)
        if not failures[attempt % len(failures)] or attempt > 3 * len(views):
            break
        attempt += 1
        if reranks:  # the failed endpoint is ejected and the request is routed again
            live = [replace(v, healthy=False) if v.key == chosen.key else v for v in live]
            ranking = policy.rank(req, live)
        else:  # the caller walks down the ranking it has
            ranking = ranking[1:]
    for chosen in tried:
        assert chosen.region in regions
        assert may_use_burst or not chosen.burst
        assert chosen.tiers is None or tier in chosen.tiers
    if reranks:
        assert len({v.key for v in tried}) == len(tried)  # an ejected endpoint is not retried


def snapshot(pools: list[tuple[str, bool, int]]) -> Snapshot:
    entries = {
        f"p{i}": PoolEntry(
            f"p{i}",
            "m",
            "h100",
            region,
            burst,
            16,
            tuple(EndpointEntry(f"p{i}/{j}", f"u{i}{j}") for j in range(replicas)),
        )
        for i, (region, burst, replicas) in enumerate(pools)
    }
    return Snapshot(
        version=1,
        published_at=0.0,
        tiers={
            "gold": TierEntry("gold", 100, 500, 50, True),
            "bronze": TierEntry("bronze", 10, 10000, None, False),
        },
        tenants={},
        keys={},
        aliases={"chat": AliasEntry("chat", "m", "chat", tuple(entries))},
        pools=entries,
    )


@settings(max_examples=100, deadline=None, database=None)
@given(
    policy_name=st.sampled_from(sorted(POLICIES)),
    pools=st.lists(
        st.tuples(st.sampled_from(REGIONS), st.booleans(), st.integers(1, 3)),
        min_size=1,
        max_size=5,
    ),
    regions=st.lists(st.sampled_from(REGIONS), min_size=1, max_size=2, unique=True),
    tier=st.sampled_from(["gold", "bronze"]),
)
def test_every_policy_behind_eligible_keeps_the_tenant_in_its_regions(
    policy_name: str, pools: list[tuple[str, bool, int]], regions: list[str], tier: str
) -> None:
    world = snapshot(pools)
    tenant = TenantEntry("t", "t", tier, tuple(regions), frozenset({"chat"}))
    candidates = eligible(world, world.aliases["chat"], tenant, world.tiers[tier])
    ordered = Router(make_policy(policy_name)).order(request(text("a")), candidates)
    assert {c.endpoint.id for c in ordered} <= {c.endpoint.id for c in candidates}
    for candidate in ordered:  # walking the whole ranking down: every one stays inside
        assert candidate.pool.region in regions
        assert tier == "gold" or not candidate.pool.burst
