"""A pool's hold queue at its bound (``max_held_per_pool``): who is refused, and how."""

from __future__ import annotations

from tests.unit.admission.helpers import FULL, GOLD, endpoint, request
from tests.unit.admission.test_policy import warm

from trunkline.gateway.admission import (
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
