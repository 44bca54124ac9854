"""Retry-After on admission's refusals: when retrying is worth it, between 1 and 30 s."""

from __future__ import annotations

from tests.unit.admission.helpers import BRONZE, FULL, GOLD, endpoint, request

from trunkline.gateway.admission import OVERLOADED, REJECTED, AdmissionPolicy


def test_just_after_the_gateway_started_a_tier_is_told_to_retry_soon_where_the_pool_has_room() -> (
    None
):
    """The expected hold is capped by what the tier was dispatched lately; just after the
    gateway started no tier had been, so every refusal on a busy pool said Retry-After: 30, the
    maximum, until one got in (the OpenAI SDKs sleep that long)."""
    policy = AdmissionPolicy()
    refused = policy.decide(request("b", "b", "bronze"), BRONZE, [endpoint(load=FULL)], 1.0)
    assert (refused.outcome, refused.reason) == (REJECTED, OVERLOADED)
    assert refused.retry_after_s is not None
    assert refused.retry_after_s < policy.config.max_retry_after_s


def test_a_tier_whose_pool_the_tiers_above_take_whole_is_told_the_longest_retry() -> None:
    policy = AdmissionPolicy()
    for n in range(600):  # gold arriving far faster than the engine completes requests
        policy.decide(request(f"g{n}", "g", "gold"), GOLD, [endpoint(load=FULL)], 1.0 + n / 600)
    refused = policy.decide(request("b", "b", "bronze"), BRONZE, [endpoint(load=FULL)], 2.0)
    assert (refused.outcome, refused.reason) == (REJECTED, OVERLOADED)
    assert refused.retry_after_s == policy.config.max_retry_after_s
