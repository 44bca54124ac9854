"""A pool's hold queue at its bound (``max_held_per_pool``): who is refused, and how."""

from __future__ import annotations

from tests.unit.admission.helpers import FULL, GOLD, SILVER, endpoint, request
from tests.unit.admission.test_policy import BUSY, warm

from trunkline.gateway.admission import (
    OVERLOADED,
    QUEUED,
    REJECTED,
    SLO_UNATTAINABLE,
    AdmissionConfig,
    AdmissionPolicy,
)


def test_gold_finding_the_queue_full_of_gold_is_refused_as_slo_unattainable_not_shed() -> None:
    """The top tier is never shed as ``overloaded`` (a 429 saying it sent more than its tier's
    share); a full queue answered gold with exactly that."""
    policy = AdmissionPolicy(AdmissionConfig(max_held_per_pool=1))
    warm(policy, GOLD, "g", 200, 1.0)
    first = policy.decide(request("g1", "g1", "gold"), GOLD, [endpoint(load=FULL)], 1.0)
    assert first.outcome == QUEUED
    second = policy.decide(request("g2", "g2", "gold"), GOLD, [endpoint(load=FULL)], 1.0)
    assert (second.outcome, second.reason, second.code) == (
        REJECTED,
        SLO_UNATTAINABLE,
        "slo_unattainable",
    )
    assert second.retry_after_s is not None and second.retry_after_s >= 1.0


def test_a_tenant_filling_its_tiers_queue_makes_room_for_a_tier_mate_with_nothing_held() -> None:
    """The queue serves a tier's tenants round robin, yet once one tenant's requests filled it,
    a tier-mate with nothing held was refused (429) while every held request was that tenant's.
    Now the flooding tenant's newest request gives way."""
    policy = AdmissionPolicy(AdmissionConfig(max_held_per_pool=4))
    warm(policy, SILVER, "a", 100, 1.0)
    warm(policy, SILVER, "b", 100, 1.0)
    flood = [
        policy.decide(request(f"a{n}", "a", "silver"), SILVER, [endpoint(load=BUSY)], 1.0)
        for n in range(4)
    ]
    assert [d.outcome for d in flood] == [QUEUED] * 4
    peer = policy.decide(request("b0", "b", "silver"), SILVER, [endpoint(load=BUSY)], 1.0)
    assert peer.outcome == QUEUED
    [evicted] = policy.poll(1.0, {"pool/0": BUSY})
    assert evicted.held.ticket == flood[-1].ticket  # the flooding tenant's newest
    assert (evicted.decision.outcome, evicted.decision.reason) == (REJECTED, OVERLOADED)
    # Between tenants holding alike, nobody is evicted for a newcomer: it is refused.
    again = policy.decide(request("a4", "a", "silver"), SILVER, [endpoint(load=BUSY)], 1.0)
    assert (again.outcome, again.reason) == (REJECTED, OVERLOADED)
