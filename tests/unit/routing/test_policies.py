"""Routing policies, table-driven: what each one ranks first, and the registry."""

from __future__ import annotations

import msgspec
import pytest

from trunkline.errors import ConfigurationError
from trunkline.gateway.routing import (
    POLICIES,
    Candidate,
    EndpointLoad,
    EndpointView,
    RequestView,
    Router,
    UnknownPolicyError,
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

REQUEST = RequestView("r1", "tenant-a", "silver", "chat", prompt_tokens=100)


def endpoints(*loads: tuple[float, float, float]) -> list[EndpointView]:
    return [
        EndpointView(f"e{i}", "pool", "eu", "h100", 16, EndpointLoad(*load))
        for i, load in enumerate(loads)
    ]


def test_round_robin_starts_one_further_each_time_and_lists_every_endpoint() -> None:
    policy = make_policy("round-robin")
    views = endpoints((0, 0, 0), (0, 0, 0), (0, 0, 0))
    rankings = [policy.rank(REQUEST, views) for _ in range(4)]
    assert rankings == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


@pytest.mark.parametrize(
    ("loads", "expected_first"),
    [
        ([(3, 0, 0.1), (1, 0, 0.9), (2, 0, 0.0)], 1),  # fewest requests wins, KV aside
        ([(1, 4, 0.0), (2, 0, 0.5), (4, 0, 0.1)], 1),  # waiting requests count as load
        ([(2, 0, 0.7), (2, 0, 0.2), (2, 0, 0.4)], 1),  # equal queues: least KV in use
    ],
)
def test_least_loaded_ranks_the_emptiest_engine_first(
    loads: list[tuple[float, float, float]], expected_first: int
) -> None:
    ranking = make_policy("least-loaded").rank(REQUEST, endpoints(*loads))
    assert ranking[0] == expected_first
    assert sorted(ranking) == [0, 1, 2]


def test_least_loaded_rotates_among_equal_endpoints() -> None:
    policy = make_policy("least-loaded")
    views = endpoints((0, 0, 0), (0, 0, 0), (5, 0, 0), (0, 0, 0))
    firsts = [policy.rank(REQUEST, views)[0] for _ in range(6)]
    assert set(firsts) == {0, 1, 3}
    assert all(policy.rank(REQUEST, views)[-1] == 2 for _ in range(4))


@pytest.mark.parametrize("name", ["round-robin", "least-loaded"])
def test_rotation_shares_an_aliass_endpoints_however_other_aliases_interleave(name: str) -> None:
    """One gateway serves a chat model and an embedding model, their requests alternating:
    each model's replicas take turns, not the first replica of each taking every request."""
    policy = make_policy(name)
    chat = [EndpointView(f"chat-{i}", "chat", "eu", "h100", 16) for i in range(2)]
    embed = [EndpointView(f"embed-{i}", "embed", "eu", "l40s", 16) for i in range(2)]
    firsts = []
    for _ in range(4):
        firsts.append(chat[policy.rank(REQUEST, chat)[0]].key)
        policy.rank(REQUEST, embed)
    assert sorted(firsts) == ["chat-0", "chat-0", "chat-1", "chat-1"]


@pytest.mark.parametrize("name", ["round-robin", "least-loaded"])
def test_a_busy_aliass_replicas_keep_taking_turns_however_many_other_sets_pass(name: str) -> None:
    """A gateway following autoscaled engines (each new one a new id) sees thousands of sets of
    endpoints in a day. Past 4,096 every ring started over, the busy alias's too: its first
    replica took the turns of the others at every reset."""
    policy = make_policy(name)
    chat = [EndpointView(f"chat-{i}", "chat", "eu", "h100", 16) for i in range(3)]
    firsts = []
    for turn in range(6):
        firsts.append(chat[policy.rank(REQUEST, chat)[0]].key)
        for other in range(2_000):  # sets seen once each between two chat requests
            policy.rank(REQUEST, [EndpointView(f"gone-{turn}-{other}", "x", "eu", "h100", 16)])
    assert sorted(firsts) == ["chat-0", "chat-0", "chat-1", "chat-1", "chat-2", "chat-2"]


@pytest.mark.parametrize("name", ["round-robin", "least-loaded"])
def test_more_aliases_than_rings_remembered_still_share_their_replicas(name: str) -> None:
    """5,000 aliases of two replicas each, their requests in turn: more rings than remembered,
    so each request finds its ring forgotten. A ring made anew must not send every request of
    every alias to its first replica."""
    policy = make_policy(name)
    aliases = [
        [EndpointView(f"a{a}-{i}", f"a{a}", "eu", "h100", 16) for i in range(2)]
        for a in range(5_000)
    ]
    firsts = [policy.rank(REQUEST, views)[0] for _ in range(2) for views in aliases]
    assert 0.4 < firsts.count(0) / len(firsts) < 0.6


@pytest.mark.parametrize("name", ["round-robin", "least-loaded"])
def test_an_ejected_endpoints_turns_are_shared_by_the_others(name: str) -> None:
    """The gateway drops ejected endpoints from the ranking. Their turns went to the next one
    along the ring: with one of four ejected, its neighbour took twice the others' share."""
    policy = make_policy(name)
    views = [EndpointView(f"e{i}", "pool", "eu", "h100", 16, healthy=i != 1) for i in range(4)]
    firsts = []
    for _ in range(6):
        firsts.append(next(i for i in policy.rank(REQUEST, views) if views[i].healthy))
    assert sorted(firsts) == [0, 0, 2, 2, 3, 3]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_ranks_nothing_when_there_is_nothing(name: str) -> None:
    assert make_policy(name).rank(REQUEST, []) == []


def test_each_policy_object_keeps_its_own_state() -> None:
    views = endpoints((0, 0, 0), (0, 0, 0))
    first, second = make_policy("round-robin"), make_policy("round-robin")
    first.rank(REQUEST, views)
    assert second.rank(REQUEST, views) == [0, 1]


def test_an_unknown_policy_is_a_configuration_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownPolicyError, match="round-robin") as caught:
        make_policy("random-walk")
    assert isinstance(caught.value, ConfigurationError)


def snapshot() -> Snapshot:
    gold = TierEntry("gold", 100, 500, 50, True)
    bronze = TierEntry("bronze", 10, 10000, None, False)
    pools = {
        "eu": PoolEntry("eu", "m", "h100", "eu", False, 16, (EndpointEntry("eu/0", "u0"),)),
        "us": PoolEntry("us", "m", "a100", "us", False, 16, (EndpointEntry("us/0", "u1"),)),
        "burst": PoolEntry("burst", "m", "l40s", "eu", True, 16, (EndpointEntry("b/0", "u2"),)),
    }
    return Snapshot(
        version=1,
        published_at=0.0,
        tiers={"gold": gold, "bronze": bronze},
        tenants={},
        keys={},
        aliases={"chat": AliasEntry("chat", "m", "chat", ("eu", "us", "burst"))},
        pools=pools,
    )


@pytest.mark.parametrize(
    ("regions", "tier", "expected"),
    [
        ((), "gold", ["eu/0", "us/0", "b/0"]),
        (("eu",), "gold", ["eu/0", "b/0"]),  # residency
        (("eu",), "bronze", ["eu/0"]),  # bronze may not use burst pools
        (("ap",), "gold", []),
    ],
)
def test_eligible_filters_by_residency_and_tier(
    regions: tuple[str, ...], tier: str, expected: list[str]
) -> None:
    world = snapshot()
    tenant = TenantEntry("t", "t", tier, regions, frozenset({"chat"}))
    found = eligible(world, world.aliases["chat"], tenant, world.tiers[tier])
    assert [c.endpoint.id for c in found] == expected


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("gold", ["eu/0", "us/0", "b/0"]), ("bronze", ["eu/0"])],
)
def test_eligible_keeps_a_pool_placed_for_some_tiers_from_the_others(
    tier: str, expected: list[str]
) -> None:
    world = snapshot()
    placed = msgspec.structs.replace(world.pools["us"], tiers=("gold",))
    world = msgspec.structs.replace(world, pools={**world.pools, "us": placed})
    tenant = TenantEntry("t", "t", tier, (), frozenset({"chat"}))
    found = eligible(world, world.aliases["chat"], tenant, world.tiers[tier])
    assert [c.endpoint.id for c in found] == expected


def test_the_router_maps_the_ranking_back_to_candidates_with_their_loads() -> None:
    world = snapshot()
    tenant = TenantEntry("t", "t", "gold", (), frozenset({"chat"}))
    candidates: list[Candidate] = eligible(
        world, world.aliases["chat"], tenant, world.tiers["gold"]
    )
    loads = {"eu/0": EndpointLoad(9, 0, 0.5), "us/0": EndpointLoad(0, 0, 0.1)}
    ordered = Router(make_policy("least-loaded")).order(REQUEST, candidates, loads)
    assert [c.endpoint.id for c in ordered] == ["b/0", "us/0", "eu/0"]  # no load known: idle
