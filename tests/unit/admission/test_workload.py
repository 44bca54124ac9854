"""The ``b2b-tiers`` workload the admission benchmark runs."""

from __future__ import annotations

from collections import Counter

import pytest

from trunkline.workloads.b2b_tiers import TieredB2bWorkload


def test_tiers_get_their_share_of_the_traffic_split_equally_between_tenants() -> None:
    workload = TieredB2bWorkload(duration_s=300.0, rate=20.0, burst_fraction=0.0)
    tenants = workload.tenants
    per_tier = Counter(tenants[r.tenant] for r in workload.requests())
    total = sum(per_tier.values())
    assert total == pytest.approx(20.0 * 300, rel=0.05)
    assert per_tier["gold"] / total == pytest.approx(0.15, abs=0.02)
    assert per_tier["silver"] / total == pytest.approx(0.30, abs=0.02)
    assert workload.tenant_rate("gold-00") == workload.tenant_rate("gold-03")


def test_a_noisy_tenant_adds_its_own_requests_and_changes_nobody_elses() -> None:
    quiet = TieredB2bWorkload(duration_s=60.0, rate=10.0)
    noisy = TieredB2bWorkload(duration_s=60.0, rate=10.0, noisy_tenant="silver-00")
    before = [(r.request_id, r.arrival) for r in quiet.requests() if r.tenant != "silver-00"]
    after = [(r.request_id, r.arrival) for r in noisy.requests() if r.tenant != "silver-00"]
    assert before == after
    mine = Counter(r.tenant for r in noisy.requests())["silver-00"]
    assert mine == pytest.approx(
        10 * Counter(r.tenant for r in quiet.requests())["silver-00"], rel=0.3
    )


def test_bad_knobs_are_refused() -> None:
    with pytest.raises(ValueError, match="gold_share"):
        TieredB2bWorkload(gold_share=0.8, silver_share=0.4)
    with pytest.raises(ValueError, match="noisy_tenant"):
        TieredB2bWorkload(noisy_tenant="nobody")
