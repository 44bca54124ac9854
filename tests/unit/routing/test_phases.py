"""Prefill/decode disaggregation: which ranked endpoints serve a request and which prefill it."""

from __future__ import annotations

import pytest

from trunkline.gateway.routing import Candidate
from trunkline.gateway.routing.phases import prefill_candidates, serving_candidates
from trunkline.snapshot import EndpointEntry, PoolEntry


def _candidate(pool: str, role: str, low: int = 0, high: int | None = None) -> Candidate:
    entry = PoolEntry(
        pool,
        "m",
        "h100",
        "eu",
        False,
        16,
        (EndpointEntry(f"{pool}/0", f"http://{pool}"),),
        min_prompt_tokens=low,
        max_prompt_tokens=high,
        role=role,
    )
    return Candidate(entry, entry.endpoints[0])


RANKING = [
    _candidate("short-prefill", "prefill", 512, 4096),
    _candidate("decode", "decode"),
    _candidate("long-prefill", "prefill", 4096),
    _candidate("both", "both"),
]


def test_prefill_pools_never_serve_and_the_ranking_order_is_kept() -> None:
    assert [c.pool.name for c in serving_candidates(RANKING)] == ["decode", "both"]


@pytest.mark.parametrize(
    ("uncached", "prefillers"),
    [
        (0, []),  # a prompt the serving engine holds whole is decoded where it is
        (511, []),
        (512, ["short-prefill"]),
        (4095, ["short-prefill"]),
        (4096, ["long-prefill"]),
        (100_000, ["long-prefill"]),
    ],
)
def test_a_prefill_pool_takes_the_uncached_lengths_of_its_range(
    uncached: int, prefillers: list[str]
) -> None:
    assert [c.pool.name for c in prefill_candidates(RANKING, uncached)] == prefillers
