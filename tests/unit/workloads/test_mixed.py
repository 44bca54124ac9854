"""Several workloads replayed together."""

from __future__ import annotations

import pytest

from trunkline.workloads import CareWorkload, MixedWorkload, NetopsWorkload


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
