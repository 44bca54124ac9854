"""The pipeline: filters are final, scores are weighted, saturated endpoints go last, ties are
broken at random; and the named pipelines behave as their names say."""

from __future__ import annotations

from collections import Counter

import pytest
from tests.unit.routing.helpers import endpoint, request, text

from trunkline.gateway.routing import (
    Balance,
    EndpointView,
    PipelinePolicy,
    PromptRange,
    WeightedScorer,
    kv_event_index,
    make_policy,
)
from trunkline.gateway.routing.filters import HealthyFilter, PromptLengthFilter, ResidencyFilter
from trunkline.gateway.routing.load_scorers import KvUsageScorer, QueueDepthScorer
from trunkline.gateway.routing.picker import MaxScorePicker


def pipeline(*, balance: Balance | None = None, seed: int = 0) -> PipelinePolicy:
    return PipelinePolicy(
        "test",
        filters=[HealthyFilter(), ResidencyFilter()],
        scorers=[WeightedScorer(QueueDepthScorer(), 3.0), WeightedScorer(KvUsageScorer(), 1.0)],
        picker=MaxScorePicker(seed),
        balance=balance,
    )


def test_filtered_endpoints_are_never_ranked() -> None:
    views = [endpoint("a", region="us"), endpoint("b", healthy=False), endpoint("c", running=9)]
    assert pipeline().rank(request(regions=("eu",)), views) == [2]


LONG, SHORT = PromptRange(2048), PromptRange(0, 2048)


def placed() -> PipelinePolicy:
    return PipelinePolicy(
        "placed",
        filters=[HealthyFilter(), ResidencyFilter(), PromptLengthFilter()],
        scorers=[WeightedScorer(QueueDepthScorer(), 1.0)],
        picker=MaxScorePicker(0),
    )


def test_prompts_go_to_the_pools_placed_for_their_length_however_busy_the_rest_after() -> None:
    views = [
        endpoint("long", prompt_tokens=LONG, running=30),
        endpoint("short", prompt_tokens=SHORT),
        endpoint("any", running=40),  # a pool with no range takes any length
    ]
    assert placed().rank(request(prompt_tokens=6000), views) == [0, 2, 1]
    assert placed().rank(request(prompt_tokens=300), views) == [1, 2, 0]


def test_a_long_prompt_goes_elsewhere_when_no_pool_placed_for_it_is_healthy() -> None:
    views = [
        endpoint("long", prompt_tokens=LONG, healthy=False),
        endpoint("short-busy", prompt_tokens=SHORT, running=5),
        endpoint("short", prompt_tokens=SHORT),
    ]
    assert placed().rank(request(prompt_tokens=6000), views) == [2, 1]


def test_placement_never_takes_a_request_out_of_its_regions() -> None:
    views = [
        endpoint("long-us", region="us", prompt_tokens=LONG),
        endpoint("short-eu", region="eu", prompt_tokens=SHORT),
    ]
    assert placed().rank(request(prompt_tokens=6000, regions=("eu",)), views) == [1]


def test_bundled_profiles_place_by_prompt_length_even_past_saturation() -> None:
    views = [
        endpoint("long", prompt_tokens=LONG, running=40),
        endpoint("short", prompt_tokens=SHORT),
    ]
    for name in ("prefix-aware", "prefix-only", "precise-prefix", "cost-aware"):
        assert make_policy(name).rank(request(prompt_tokens=4096), views) == [0, 1], name
        assert make_policy(name).rank(request(prompt_tokens=100), views) == [1, 0], name


def test_weighted_scores_are_normalised_to_one() -> None:
    views = [endpoint("a", running=4, kv=0.0), endpoint("b", running=0, kv=1.0)]
    # a: 3/4 * 0 + 1/4 * 1 = 0.25; b: 3/4 * 1 + 1/4 * 0 = 0.75
    assert pipeline().scores(request(), views) == pytest.approx([0.25, 0.75])
    assert pipeline().rank(request(), views) == [1, 0]


def test_ties_are_broken_at_random_and_reproducibly() -> None:
    views = [endpoint(f"e{i}") for i in range(4)]
    firsts = [pipeline(seed=7).rank(request(), views)[0] for _ in range(3)]
    assert len(set(firsts)) == 1  # one seed, one order
    policy = pipeline(seed=7)
    spread = Counter(policy.rank(request(), views)[0] for _ in range(400))
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 50


@pytest.mark.parametrize(
    ("loads", "saturated"),
    [
        ([0, 0, 0, 0], [False] * 4),
        ([4, 0, 0, 0], [False] * 4),  # mean 1.25: headroom 4 keeps affinity at low load
        ([5, 0, 0, 0], [True, False, False, False]),
        ([40, 30, 30, 30], [True, False, False, False]),  # 41 > 1.25 x 33.75
        ([36, 30, 30, 30], [False] * 4),
    ],
)
def test_balance_saturates_endpoints_clearly_above_their_share(
    loads: list[float], saturated: list[bool]
) -> None:
    assert Balance(load_factor=1.25, headroom=4).saturated(loads) == saturated


def test_prefix_aware_stays_on_the_cached_endpoint_until_it_is_saturated() -> None:
    prompt = text("system", "question")
    idle = [endpoint("a"), endpoint("b"), endpoint("c", running=3)]
    policy = make_policy("prefix-aware")
    policy.routed(request(prompt), idle[2])
    assert policy.rank(request(prompt), idle)[0] == 2  # a short queue is worth the cache
    busy = [endpoint("a", running=2), endpoint("b", running=2), endpoint("c", running=12)]
    assert policy.rank(request(prompt), busy)[0] != 2  # saturated: another replica
    assert policy.rank(request(prompt), busy)[-1] == 2


def test_prefix_only_piles_a_hot_prefix_on_one_endpoint_and_prefix_aware_spreads_it() -> None:
    prompt = text("system", "policy")
    loads = {"prefix-only": Counter[str](), "prefix-aware": Counter[str]()}
    for name, routed in loads.items():
        policy = make_policy(name)
        running = dict.fromkeys("abcd", 0.0)
        for index in range(40):
            views = [endpoint(k, running=v) for k, v in running.items()]
            req = request(prompt + f"user {index}" * 8, request_id=str(index))
            chosen = views[policy.rank(req, views)[0]]
            policy.routed(req, chosen)
            running[chosen.key] += 1  # nothing finishes: the load only grows
            routed[chosen.key] += 1
    assert max(loads["prefix-only"].values()) == 40
    assert max(loads["prefix-aware"].values()) <= 15


def test_only_the_precise_policy_asks_for_kv_events() -> None:
    assert kv_event_index(make_policy("precise-prefix")) is not None
    for name in ("prefix-aware", "prefix-only", "cost-aware", "round-robin"):
        assert kv_event_index(make_policy(name)) is None


def test_cost_aware_prefers_the_cheaper_pool_per_token_until_it_saturates() -> None:
    def views(dear_running: float, cheap_running: float) -> list[EndpointView]:
        return [
            endpoint("dear", running=dear_running, cost_per_hour=3.0, tokens_per_s=1000),
            endpoint("cheap", running=cheap_running, cost_per_hour=1.0, tokens_per_s=1000),
        ]

    policy = make_policy("cost-aware")
    assert policy.rank(request(), views(0, 0))[0] == 1
    assert policy.rank(request(), views(1, 20))[0] == 0
