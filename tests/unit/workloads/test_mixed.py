"""Several workloads replayed together."""

from __future__ import annotations

import pytest

from trunkline.workloads import CareWorkload, MixedWorkload, NetopsWorkload, TierSlice
from trunkline.workloads.b2b_tiers import TieredB2bWorkload


def test_a_mix_merges_requests_in_arrival_order_and_unites_tenants() -> None:
    care = CareWorkload(duration_s=20, rate=1.0, preamble_tokens=50)
    netops = NetopsWorkload(duration_s=20, rate=1.0, document_tokens=100.0)
    mix = MixedWorkload((care, netops))
    requests = list(mix.requests())
    arrivals = [r.arrival for r in requests]
    assert arrivals == sorted(arrivals)
    assert len(requests) == len(list(care.requests())) + len(list(netops.requests()))
    assert dict(mix.tenants) == {**care.tenants, **netops.tenants}
    assert mix.duration_s == 20


def test_a_mix_refuses_a_tenant_with_two_tiers_and_an_empty_mix() -> None:
    with pytest.raises(ValueError, match=r"tenant 'care-0' has tier 'silver'.*'gold'"):
        MixedWorkload((CareWorkload(), CareWorkload(tier="gold")))
    with pytest.raises(ValueError, match="at least one part"):
        MixedWorkload(())


def test_a_tier_slice_keeps_the_requests_of_its_tiers_tenants_as_they_arrive() -> None:
    b2b = TieredB2bWorkload(duration_s=20, rate=5.0)
    gold = TierSlice(b2b, frozenset({"gold"}))
    rest = TierSlice(b2b, frozenset({"silver", "bronze"}))
    assert set(gold.tenants.values()) == {"gold"}
    assert set(rest.tenants.values()) == {"silver", "bronze"}
    everything = {r.request_id: (r.arrival, r.tenant) for r in b2b.requests()}
    for part in (gold, rest):
        for request in part.requests():
            assert everything[request.request_id] == (request.arrival, request.tenant)
            assert request.tenant in part.tenants
    assert len(list(gold.requests())) + len(list(rest.requests())) == len(everything)
    assert list(gold.requests()) and gold.name == "b2b-tiers[gold]"


def test_a_tier_slice_of_a_tier_nobody_is_on_is_refused() -> None:
    with pytest.raises(ValueError, match="no tenant on tier"):
        TierSlice(CareWorkload(), frozenset({"gold"}))
