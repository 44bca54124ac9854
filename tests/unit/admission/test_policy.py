from __future__ import annotations

import dataclasses

import pytest
from tests.unit.admission.helpers import (
    BRONZE,
    FULL,
    GOLD,
    IDLE,
    SILVER,
    endpoint,
    request,
)

from trunkline.gateway.admission import (
    ADMITTED,
    DEADLINE_EXCEEDED,
    OVERLOADED,
    QUEUED,
    REJECTED,
    SLO_UNATTAINABLE,
    AdmissionConfig,
    AdmissionPolicy,
    Decision,
)
from trunkline.gateway.routing import EndpointLoad, PromptRange
from trunkline.snapshot import TierEntry

BUSY = EndpointLoad(running=235.0, kv_usage=0.6)
"""Over 90 % of the sequence slots taken: lower tiers wait, the top tier still starts at once."""


def warm(
    policy: AdmissionPolicy,
    tier: TierEntry,
    tenant: str,
    count: int,
    until: float,
    start: float = 0.0,
) -> None:
    """``count`` requests admitted on an idle engine over ``[start, until)``: the tier's rate."""
    for index in range(count):
        at = start + (until - start) * index / count
        decision = policy.decide(
            request(f"{tenant}-w{index}", tenant, tier.name), tier, [endpoint()], at
        )
        assert decision.outcome == ADMITTED


def hold(policy: AdmissionPolicy, tier: TierEntry, now: float, tenant: str = "t") -> Decision:
    decision = policy.decide(
        request(f"{tenant}-held", tenant, tier.name), tier, [endpoint(load=BUSY)], now
    )
    assert decision.outcome == QUEUED, decision
    return decision


def test_an_idle_engine_admits_at_once_with_the_predicted_ttft() -> None:
    decision = AdmissionPolicy().decide(request(), SILVER, [endpoint()], 0.0)
    assert (decision.outcome, decision.endpoint, decision.label) == (ADMITTED, 0, "admitted")
    assert decision.predicted_ttft_s is not None and 0 < decision.predicted_ttft_s < 0.5


def test_gold_goes_to_a_burst_pool_endpoint_when_the_shared_pool_is_full() -> None:
    ranked = [endpoint("shared/0", FULL), endpoint("burst/0", IDLE, pool="burst", burst=True)]
    decision = AdmissionPolicy().decide(request(tier="gold"), GOLD, ranked, 0.0)
    assert (decision.outcome, decision.endpoint, decision.label) == (ADMITTED, 1, "admitted;burst")


def test_the_top_tier_starts_where_lower_tiers_must_wait() -> None:
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    gold = policy.decide(request("g", tier="gold"), GOLD, [endpoint(load=BUSY)], 1.0)
    assert gold.outcome == ADMITTED
    assert hold(policy, SILVER, 1.0).wait_s is not None


def test_a_held_request_is_admitted_when_the_engine_frees_up() -> None:
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    ticket = hold(policy, SILVER, 1.0).ticket
    assert policy.poll(1.05, {"pool/0": BUSY}) == []
    [release] = policy.poll(1.2, {"pool/0": IDLE})
    assert release.held.ticket == ticket
    assert release.decision.outcome == ADMITTED
    assert release.decision.wait_s == pytest.approx(0.2)
    assert policy.held() == 0


def test_a_held_request_is_rejected_before_its_deadline_passes_not_served_late() -> None:
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    hold(policy, SILVER, 1.0)
    assert policy.poll(2.0, {"pool/0": BUSY}) == []
    # Silver's 2 s SLO ends at 3.0; even an idle engine needs ~0.1 s to the first token.
    [release] = policy.poll(2.95, {"pool/0": BUSY})
    assert (release.decision.outcome, release.decision.reason) == (REJECTED, DEADLINE_EXCEEDED)
    assert release.decision.code == "slo_unattainable"
    assert release.decision.retry_after_s is not None and release.decision.retry_after_s >= 1.0


@pytest.mark.parametrize(
    ("tier", "reason", "code"),
    [(GOLD, SLO_UNATTAINABLE, "slo_unattainable"), (BRONZE, OVERLOADED, "rate_limited")],
)
def test_a_request_that_cannot_make_its_deadline_is_rejected_at_once(
    tier: TierEntry, reason: str, code: str
) -> None:
    # Nothing of this tier was dispatched lately and the engine is full: a hold would end in a
    # missed deadline, so the answer comes now.
    decision = AdmissionPolicy().decide(request(tier=tier.name), tier, [endpoint(load=FULL)], 0.0)
    assert (decision.outcome, decision.reason, decision.code) == (REJECTED, reason, code)
    assert decision.ticket is None
    assert decision.retry_after_s is not None and 1.0 <= decision.retry_after_s <= 30.0


def test_bronze_is_never_held_by_default_it_is_shed_at_once() -> None:
    policy = AdmissionPolicy()
    warm(policy, BRONZE, "b", 20, 1.0)
    decision = policy.decide(request("b", "b", "bronze"), BRONZE, [endpoint(load=BUSY)], 1.0)
    assert (decision.outcome, decision.reason, decision.code) == (
        REJECTED,
        OVERLOADED,
        "rate_limited",
    )


def test_bronze_is_shed_first_when_the_queue_is_full() -> None:
    # With bronze allowed to wait, a full queue evicts bronze to make room for silver.
    policy = AdmissionPolicy(AdmissionConfig(max_held_per_pool=2, hold_min_priority=0))
    warm(policy, BRONZE, "b", 20, 1.0)
    warm(policy, SILVER, "s", 20, 2.0, start=1.0)
    first = hold(policy, BRONZE, 2.0, "b1")
    hold(policy, BRONZE, 2.0, "b2")
    silver = hold(policy, SILVER, 2.0, "s1")
    assert silver.ticket is not None
    [evicted] = policy.poll(2.0, {"pool/0": BUSY})
    assert evicted.held.ticket != first.ticket  # the newest bronze goes
    assert (evicted.decision.outcome, evicted.decision.reason) == (REJECTED, OVERLOADED)
    # A further bronze request finds no lower tier to evict: refused at once.
    late = policy.decide(request("b3", "b3", "bronze"), BRONZE, [endpoint(load=BUSY)], 2.0)
    assert (late.outcome, late.reason) == (REJECTED, OVERLOADED)


def test_held_requests_leave_in_priority_order() -> None:
    policy = AdmissionPolicy(AdmissionConfig(hold_min_priority=0))
    warm(policy, BRONZE, "b", 20, 1.0)
    warm(policy, SILVER, "s", 20, 2.0, start=1.0)
    bronze = hold(policy, BRONZE, 2.0, "b1").ticket
    silver = hold(policy, SILVER, 2.0, "s1").ticket
    released = policy.poll(2.1, {"pool/0": IDLE})
    assert [r.held.ticket for r in released] == [silver, bronze]


def test_a_lower_tier_does_not_take_a_pool_whose_queue_holds_a_higher_one() -> None:
    """Held requests wait in their first choice's queue: a bronze request ranking that pool
    second was admitted there while silver was held for it (bronze first, it was refused)."""
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    warm(policy, BRONZE, "b", 20, 1.0)
    silver = hold(policy, SILVER, 1.0, "s1")  # held for pool "pool", busy
    eu, us = endpoint("pool/0", IDLE), endpoint("us/0", FULL, pool="us")  # pool frees up

    second = policy.decide(request("b2", "b2", "bronze"), BRONZE, [us, eu], 1.05)

    assert (second.outcome, second.reason) == (REJECTED, OVERLOADED)
    [release] = policy.poll(1.1, {"pool/0": IDLE, "us/0": FULL})
    assert (release.held.ticket, release.decision.outcome) == (silver.ticket, ADMITTED)
    # Once nothing is held there, bronze may take it as its second choice.
    then = policy.decide(request("b3", "b3", "bronze"), BRONZE, [us, eu], 1.2)
    assert (then.outcome, then.endpoint) == (ADMITTED, 1)  # ranked[1]: pool/0


def test_a_heavy_tenants_held_excess_does_not_close_its_pool_to_others() -> None:
    """Its pool serves others past it: requests ranking that pool second need not wait for it
    either (they did once held requests closed a pool to lower choices)."""
    policy = AdmissionPolicy()
    for index in range(100):
        tenant = "noisy" if index % 10 else f"quiet-{index // 10 % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
    half_full = endpoint(load=EndpointLoad(running=150.0, kv_usage=0.4))
    noisy = policy.decide(request("n", "noisy"), SILVER, [half_full], 5.0)
    assert noisy.outcome == QUEUED  # held in "pool", waiting for room
    elsewhere = endpoint("us/0", FULL, pool="us")

    quiet = policy.decide(request("q", "quiet-1"), SILVER, [elsewhere, half_full], 5.0)

    assert (quiet.outcome, quiet.endpoint) == (ADMITTED, 1)


def test_work_sent_since_the_load_was_measured_counts_against_the_engine() -> None:
    # 2,500 prompt tokens queued: one more 1,000-token prompt starts within the dispatch
    # horizon, two do not. Loads measured 2 s before (after the warm-up) do not show the first.
    def second(age_s: float) -> str:
        policy = AdmissionPolicy(AdmissionConfig(count_recent_dispatches=True))
        warm(policy, SILVER, "s", 20, 1.0)
        load = EndpointLoad(queued_prompt_tokens=2500.0, age_s=age_s)
        ranked = [endpoint(load=load)]
        assert policy.decide(request("one"), SILVER, ranked, 5.0).outcome == ADMITTED
        return policy.decide(request("two"), SILVER, ranked, 5.0).outcome

    assert second(0.0) == ADMITTED  # fresh loads: the caller shows every request itself
    assert second(2.0) == QUEUED


def test_a_tenant_far_over_its_share_waits_where_its_peers_go_straight_in() -> None:
    policy = AdmissionPolicy()
    for index in range(100):
        at = index * 0.05
        tenant = "noisy" if index % 10 else f"quiet-{index // 10 % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], at)
    half_full = [endpoint(load=EndpointLoad(running=150.0, kv_usage=0.4))]
    assert policy.decide(request("q", "quiet-0"), SILVER, half_full, 5.0).outcome == ADMITTED
    assert policy.decide(request("n", "noisy"), SILVER, half_full, 5.0).outcome == QUEUED


def test_a_heavy_tenant_waiting_for_room_does_not_block_its_peers_in_the_queue() -> None:
    policy = AdmissionPolicy()
    for index in range(100):
        tenant = "noisy" if index % 10 else f"quiet-{index // 10 % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
    noisy = hold(policy, SILVER, 5.0, "noisy")
    quiet = hold(policy, SILVER, 5.0, "quiet-0")
    # Room for ordinary requests, not for a tenant far over its share: the quiet one goes first.
    half_full = {"pool/0": EndpointLoad(running=150.0, kv_usage=0.4)}
    [release] = policy.poll(5.1, half_full)
    assert release.held.ticket == quiet.ticket and release.decision.outcome == ADMITTED
    [release] = policy.poll(5.2, {"pool/0": IDLE})
    assert release.held.ticket == noisy.ticket


def test_a_cancelled_hold_leaves_the_queue() -> None:
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    ticket = hold(policy, SILVER, 1.0).ticket
    assert ticket is not None and policy.cancel(ticket)
    assert policy.held() == 0 and policy.poll(1.1, {"pool/0": IDLE}) == []


def test_a_prompt_too_long_for_the_slo_even_when_idle_is_still_served() -> None:
    decision = AdmissionPolicy().decide(
        request(tier="gold", prompt_tokens=60_000), GOLD, [endpoint()], 0.0
    )
    assert decision.outcome == ADMITTED


@pytest.mark.parametrize("tier", [SILVER, BRONZE])
def test_a_lower_tiers_long_prompt_is_sent_to_an_idle_engine(tier: TierEntry) -> None:
    # 6,000 prompt tokens take an idle L40S ~0.4 s to prefill: past the 0.3 s dispatch horizon,
    # so before the horizon stretched with the prompt, this was refused on an idle fleet.
    decision = AdmissionPolicy().decide(
        request(tier=tier.name, prompt_tokens=6000), tier, [endpoint()], 0.0
    )
    assert decision.outcome == ADMITTED
    assert decision.predicted_ttft_s is not None and decision.predicted_ttft_s > 0.3


def test_a_lower_tiers_long_prompt_still_waits_behind_a_queue_longer_than_itself() -> None:
    # The stretched horizon is twice the prompt's idle TTFT: 12,000 tokens queued ahead triple it.
    queued = EndpointLoad(queued_prompt_tokens=12_000.0, waiting=3.0)
    policy = AdmissionPolicy()
    warm(policy, BRONZE, "b", 20, 1.0)
    decision = policy.decide(
        request("b", "b", "bronze", prompt_tokens=6000), BRONZE, [endpoint(load=queued)], 1.0
    )
    assert (decision.outcome, decision.reason) == (REJECTED, OVERLOADED)
    short_queue = EndpointLoad(queued_prompt_tokens=2000.0, waiting=1.0)
    decision = policy.decide(
        request("b2", "b", "bronze", prompt_tokens=6000), BRONZE, [endpoint(load=short_queue)], 1.0
    )
    assert decision.outcome == ADMITTED


def test_no_endpoint_is_a_rejection() -> None:
    decision = AdmissionPolicy().decide(request(), SILVER, [], 0.0)
    assert (decision.outcome, decision.reason) == (REJECTED, SLO_UNATTAINABLE)


SLOWED = EndpointLoad(running=100.0, kv_usage=0.4, queued_prompt_tokens=2000.0)
"""Gold still meets its 500 ms SLO here, but at over 1.5x its TTFT on an idle engine."""


def test_gold_uses_the_shared_pool_first_even_when_the_burst_pool_ranks_higher() -> None:
    ranked = [endpoint("burst/0", IDLE, pool="burst", burst=True), endpoint("shared/0", IDLE)]
    decision = AdmissionPolicy().decide(request(tier="gold"), GOLD, ranked, 0.0)
    assert (decision.endpoint, decision.label) == (1, "admitted")


def test_gold_goes_to_the_burst_pool_where_the_shared_one_would_stretch_its_first_token() -> None:
    ranked = [endpoint("shared/0", SLOWED), endpoint("burst/0", IDLE, pool="burst", burst=True)]
    decision = AdmissionPolicy().decide(request(tier="gold"), GOLD, ranked, 0.0)
    assert (decision.endpoint, decision.label) == (1, "admitted;burst")
    # With no better place, the slower shared engine still meets gold's SLO: gold starts there.
    both_slowed = [ranked[0], endpoint("burst/0", SLOWED, pool="burst", burst=True)]
    decision = AdmissionPolicy().decide(request("g2", tier="gold"), GOLD, both_slowed, 0.0)
    assert (decision.outcome, decision.endpoint) == (ADMITTED, 0)


def test_a_replica_not_measured_yet_is_judged_at_its_pools_measured_rates() -> None:
    # The first scrapes measured replica 1 only. Its engine is far faster than the L40S preset
    # replica 0 would otherwise be judged at, and gold went there although the router chose 0.
    fast = EndpointLoad(prefill_tokens_per_s=200_000.0, decode_step_s=0.005)
    ranked = [endpoint("pool/0", IDLE), endpoint("pool/1", fast)]
    decision = AdmissionPolicy().decide(request(tier="gold", prompt_tokens=10), GOLD, ranked, 0.0)
    assert (decision.outcome, decision.endpoint) == (ADMITTED, 0)
    assert decision.predicted_ttft_s == pytest.approx(10 / 200_000 + 1.5 * 0.005)


LONG, SHORT = PromptRange(2048), PromptRange(0, 2048)


@pytest.mark.parametrize("tier", [GOLD, SILVER], ids=["gold", "silver"])
def test_a_short_prompt_stays_on_the_pool_placed_for_it_when_another_would_start_sooner(
    tier: TierEntry,
) -> None:
    fast = EndpointLoad(prefill_tokens_per_s=200_000.0, decode_step_s=0.005)
    for ranked, placed in (
        ([endpoint("short/0", pool="short", prompt_tokens=SHORT),
          endpoint("long/0", fast, pool="long", prompt_tokens=LONG)], 0),
        ([endpoint("long/0", fast, pool="long", prompt_tokens=LONG),
          endpoint("short/0", pool="short", prompt_tokens=SHORT)], 1),
    ):  # fmt: skip
        decision = AdmissionPolicy().decide(
            request(tier=tier.name, prompt_tokens=100), tier, ranked, 0.0
        )
        assert (decision.outcome, decision.endpoint) == (ADMITTED, placed)


def test_only_gold_leaves_the_pool_placed_for_it_when_that_cannot_make_its_deadline() -> None:
    ranked = [
        endpoint("short/0", FULL, pool="short", prompt_tokens=SHORT),
        endpoint("long/0", pool="long", prompt_tokens=LONG),
    ]
    decision = AdmissionPolicy().decide(request(tier="gold", prompt_tokens=100), GOLD, ranked, 0.0)
    assert (decision.outcome, decision.endpoint) == (ADMITTED, 1)
    # Silver waits for (or is refused by) its own pool: sent to the long-prompt pool, it would
    # share engine steps with long prefills there.
    for tier in (SILVER, BRONZE):
        decision = AdmissionPolicy().decide(
            request(tier=tier.name, prompt_tokens=100), tier, ranked, 0.0
        )
        assert decision.outcome in (QUEUED, REJECTED), (tier.name, decision)
    # ... unless no pool placed for it is healthy.
    ejected = [dataclasses.replace(ranked[0], healthy=False), ranked[1]]
    decision = AdmissionPolicy().decide(request(prompt_tokens=100), SILVER, ejected, 0.0)
    assert (decision.outcome, decision.endpoint) == (ADMITTED, 1)


def test_a_noisy_tenant_past_its_share_is_held_where_its_peers_still_go_straight_in() -> None:
    policy = AdmissionPolicy()
    # The noisy tenant sends 8x each quiet one's rate, and all of it gets in on an idle engine.
    for index in range(100):
        tenant = "noisy" if index % 10 < 8 else f"quiet-{index % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
    # An engine a third full: room for everybody's fair share, not for the noisy tenant's excess.
    third_full = [endpoint(load=EndpointLoad(running=80.0, kv_usage=0.3))]
    assert policy.decide(request("q", "quiet-0"), SILVER, third_full, 5.0).outcome == ADMITTED
    assert policy.decide(request("n", "noisy"), SILVER, third_full, 5.0).outcome == QUEUED
    # Once the others have sent as much as it for a while, it is not noisy any more.
    for index in range(200):
        policy.decide(
            request(f"l{index}", f"quiet-{index % 2}"), SILVER, [endpoint()], 5 + index * 0.1
        )
    policy.poll(25.0, {"pool/0": IDLE})  # the old holds are long gone
    assert policy.decide(request("n2", "noisy"), SILVER, third_full, 25.0).outcome == ADMITTED


def test_a_peer_goes_straight_in_while_a_noisy_tenants_excess_waits_in_the_queue() -> None:
    policy = AdmissionPolicy()
    for index in range(100):
        tenant = "noisy" if index % 10 < 8 else f"quiet-{index % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
    third_full = [endpoint(load=EndpointLoad(running=80.0, kv_usage=0.3))]
    for index in range(5):
        policy.decide(request(f"n{index}", "noisy"), SILVER, third_full, 5.0)
    assert policy.held() >= 5
    # Its peer neither waits behind the noisy tenant's held requests nor is refused for them.
    assert policy.decide(request("q", "quiet-1"), SILVER, third_full, 5.0).outcome == ADMITTED


def test_a_noisy_tenants_held_excess_does_not_shed_the_tier_below() -> None:
    policy = AdmissionPolicy()
    for index in range(100):
        tenant = "noisy" if index % 10 < 8 else f"quiet-{index % 2}"
        policy.decide(request(f"w{index}", tenant), SILVER, [endpoint()], index * 0.05)
        policy.decide(request(f"b{index}", "b", "bronze"), BRONZE, [endpoint()], index * 0.05)
    third_full = [endpoint(load=EndpointLoad(running=80.0, kv_usage=0.3))]
    for index in range(5):
        policy.decide(request(f"n{index}", "noisy"), SILVER, third_full, 5.0)
    assert policy.held() >= 5
    # Bronze is never held: were the noisy tenant's excess ahead of it, it would be shed.
    bronze = policy.decide(request("b", "b", "bronze"), BRONZE, third_full, 5.0)
    assert bronze.outcome == ADMITTED


def test_a_request_is_held_only_if_its_first_token_can_still_come_in_time_after_the_hold() -> None:
    """The hold (with its margin) was checked against the deadline itself, but the first token
    comes an idle TTFT after the hold at best: a long prompt was held for a wait it could not
    afford, then rejected ``deadline_exceeded`` once it ran out of time — its client kept
    waiting for a refusal it could have had at once."""
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    hold(policy, SILVER, 1.0, "first")
    long = request("long", "second", "silver", prompt_tokens=8000)
    decision = policy.decide(long, SILVER, [endpoint(load=BUSY)], 1.0)
    assert (decision.outcome, decision.reason) == (REJECTED, OVERLOADED)
    # Each would have been held: a short prompt's first token still comes in time after it.
    short = request("short", "third", "silver")
    assert policy.decide(short, SILVER, [endpoint(load=BUSY)], 1.0).outcome == QUEUED


def test_a_poll_serves_the_pool_queue_holding_gold_first_and_counts_what_it_sent() -> None:
    """Requests wait in their first choice's queue, and their rankings reach other pools. A
    poll served the queues in the order the pools were first seen, each blind to what the
    others had just sent: silver held for pool a took a's room, then gold held for pool b
    (full) was sent to a as if silver were not ahead of it there — predicted within its SLO,
    in fact past it."""
    policy = AdmissionPolicy()
    a, b = endpoint("a/0", pool="a"), endpoint("b/0", pool="b")
    for index in range(20):  # pool a serves silver, pool b gold: each tier's recent rate
        policy.decide(request(f"s{index}", "s", "silver"), SILVER, [a], index / 20)
    for index in range(60):
        policy.decide(request(f"g{index}", "g", "gold", prompt_tokens=2000), GOLD, [b], index / 60)
    full_a, full_b = (dataclasses.replace(view, load=FULL) for view in (a, b))
    silver = policy.decide(request("silver", "x", "silver"), SILVER, [full_a, full_b], 1.0)
    gold_request = request("gold", "y", "gold", prompt_tokens=2000)
    gold = policy.decide(gold_request, GOLD, [full_b, full_a], 1.0)
    assert (silver.outcome, gold.outcome) == (QUEUED, QUEUED)

    # Room on a for one of them (b still full).
    room = EndpointLoad(queued_prompt_tokens=2800.0, waiting=1.0)
    [release] = policy.poll(1.1, {"a/0": room, "b/0": FULL})

    assert release.held.ticket == gold.ticket
    assert (release.decision.outcome, release.decision.endpoint) == (ADMITTED, 1)  # a/0
    assert policy.held() == 1  # silver waits for the room gold took


def test_a_tenant_whose_first_held_client_left_keeps_its_turn() -> None:
    """A held request leaving the queue unserved (its client went away, or its deadline came)
    passed its tenant's turn on as if it had been served: the tenant's next request went to
    the back of the round, behind every tier-mate."""
    policy = AdmissionPolicy()
    warm(policy, SILVER, "s", 20, 1.0)
    first = hold(policy, SILVER, 1.0, "a")
    second = policy.decide(request("a2", "a", "silver"), SILVER, [endpoint(load=BUSY)], 1.0)
    other = hold(policy, SILVER, 1.0, "b")
    assert first.ticket is not None and policy.cancel(first.ticket)
    released = policy.poll(1.1, {"pool/0": IDLE})
    assert [r.held.ticket for r in released] == [second.ticket, other.ticket]


def test_a_request_shed_from_a_full_queue_is_told_when_its_own_tier_may_retry() -> None:
    """Silver evicted for a gold arrival was told gold's expected hold (short: nothing is
    above gold) as its Retry-After, sooner than a silver request refused at that moment."""
    policy = AdmissionPolicy(AdmissionConfig(max_held_per_pool=1))
    warm(policy, SILVER, "s", 20, 1.0)
    for index in range(60):  # gold's recent rate: gold may be held
        policy.decide(request(f"g{index}", "g", "gold"), GOLD, [endpoint()], index / 60)
    full = [endpoint(load=FULL)]
    assert policy.decide(request("s1", "a", "silver"), SILVER, full, 1.0).outcome == QUEUED
    assert policy.decide(request("gold", "x", "gold"), GOLD, full, 1.0).outcome == QUEUED

    [evicted] = policy.poll(1.0, {"pool/0": FULL})
    refused = policy.decide(request("s2", "b", "silver"), SILVER, full, 1.0)

    assert (evicted.decision.reason, refused.reason) == (OVERLOADED, OVERLOADED)
    assert evicted.decision.retry_after_s == pytest.approx(refused.retry_after_s)


def test_a_poll_serves_gold_held_for_any_pool_before_silver_held_behind_gold_in_another() -> None:
    """The queues were served one after the other, highest head first: a queue whose head was
    gold served its silver too before the next queue's gold. Silver held for pool a took a/1's
    room, and gold held for pool b (full), whose ranking reaches a/1, waited behind it."""
    policy = AdmissionPolicy()
    a0, a1, b0 = endpoint("a/0", pool="a"), endpoint("a/1", pool="a"), endpoint("b/0", pool="b")
    for index in range(20):  # each tier's recent rate on each pool
        policy.decide(request(f"s{index}", "s", "silver"), SILVER, [a0, a1], index / 20)
    for pool in (b0, a0):
        for index in range(60):
            gold_warm = request(f"{pool.key}-{index}", "g", "gold", prompt_tokens=2000)
            policy.decide(gold_warm, GOLD, [pool], index / 60)
    full_a0, full_a1, full_b0 = (dataclasses.replace(view, load=FULL) for view in (a0, a1, b0))
    first_gold = request("gold-a", "x", "gold", prompt_tokens=2000)
    second_gold = request("gold-b", "z", "gold", prompt_tokens=2000)
    held = [
        policy.decide(first_gold, GOLD, [full_a0], 1.0),
        policy.decide(request("silver-a", "y", "silver"), SILVER, [full_a0, full_a1], 1.0),
        policy.decide(second_gold, GOLD, [full_b0, full_a1], 1.0),
    ]
    assert [decision.outcome for decision in held] == [QUEUED] * 3

    # Room on a/0 and a/1 for one request each (b/0 still full).
    room = EndpointLoad(queued_prompt_tokens=2800.0, waiting=1.0)
    released = policy.poll(1.1, {"a/0": room, "a/1": room, "b/0": FULL})

    sent = {r.held.request.request_id: r.decision.endpoint for r in released}
    assert sent == {"gold-a": 0, "gold-b": 1}  # silver waits for the room gold took
    assert policy.held() == 1
