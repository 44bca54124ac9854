"""Workload generators: seeded, repeatable, and their knobs do what they say."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from trunkline.workloads import (
    B2bWorkload,
    CareWorkload,
    NetopsWorkload,
    Workload,
    WorkloadRequest,
    token_oracle,
)


def fingerprint(workload: Workload) -> list[tuple[str, float, str, int, int]]:
    return [
        (r.request_id, r.arrival, r.tenant, r.prompt.num_tokens, r.max_tokens)
        for r in workload.requests()
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: CareWorkload(seed=seed, duration_s=60),
        lambda seed: NetopsWorkload(seed=seed, duration_s=120),
        lambda seed: B2bWorkload(seed=seed, duration_s=30),
    ],
)
def test_the_same_seed_replays_the_same_requests_and_another_seed_others(
    make: Callable[[int], Workload],
) -> None:
    first = fingerprint(make(1))
    assert first == fingerprint(make(1))
    assert first != fingerprint(make(2))
    arrivals = [arrival for _, arrival, *_ in first]
    assert arrivals == sorted(arrivals)
    assert len(first) > 10


def test_rate_scales_the_number_of_requests() -> None:
    slow = len(fingerprint(NetopsWorkload(rate=0.5, duration_s=400)))
    fast = len(fingerprint(NetopsWorkload(rate=2.0, duration_s=400)))
    assert 3 < fast / slow < 5


def test_care_turns_quote_the_previous_answers_so_the_cache_sees_whole_conversations() -> None:
    requests = list(CareWorkload(duration_s=120, turns=4, think_s=5).requests())
    by_id = {r.request_id: r for r in requests}
    later = next(r for r in requests if r.request_id.endswith("-1"))
    earlier = by_id[later.request_id[:-1] + "0"]
    assert earlier.output_tokens is not None
    history = earlier.prompt.token_ids + earlier.output_tokens
    assert later.prompt.token_ids[: len(history)] == history
    assert later.max_tokens == len(later.output_tokens or [])


def test_a_longer_preamble_and_more_turns_raise_the_oracle_hit_rate() -> None:
    def oracle(workload: CareWorkload) -> float:
        return token_oracle(workload.requests(), 16).token_hit_rate

    base = oracle(CareWorkload(duration_s=60, preamble_tokens=200, turns=1))
    longer = oracle(CareWorkload(duration_s=60, preamble_tokens=3000, turns=1))
    chattier = oracle(CareWorkload(duration_s=60, preamble_tokens=200, turns=6, think_s=3))
    assert base < longer
    assert base < chattier


def test_netops_documents_follow_their_popularity_law() -> None:
    def top_share(zipf: float) -> float:
        requests = list(NetopsWorkload(rate=5, duration_s=200, zipf=zipf).requests())
        counts = Counter(tuple(r.prompt.block_hashes(16)[12:14]) for r in requests)
        return counts.most_common(1)[0][1] / len(requests)

    assert top_share(2.0) > top_share(0.0) * 2
    tokens = [r.prompt.num_tokens for r in NetopsWorkload(document_tokens=12000).requests()]
    assert sum(tokens) / len(tokens) > 9000


def test_b2b_deals_tiers_and_bursts_raise_the_peak_rate() -> None:
    tiers = Counter(B2bWorkload(tenants_count=50).tenants.values())
    assert tiers == {"gold": 10, "silver": 15, "bronze": 25}

    def peak_per_10s(burst_factor: float) -> int:
        workload = B2bWorkload(duration_s=300, burst_factor=burst_factor, burst_fraction=0.2)
        return max(Counter(int(r.arrival // 10) for r in workload.requests()).values())

    assert peak_per_10s(8.0) > 1.5 * peak_per_10s(1.0)


def test_every_request_names_a_tenant_the_workload_declares() -> None:
    for workload in (CareWorkload(duration_s=20, tenants_count=3), B2bWorkload(duration_s=20)):
        requests: list[WorkloadRequest] = list(workload.requests())
        assert {r.tenant for r in requests} <= set(workload.tenants)
