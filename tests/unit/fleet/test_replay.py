"""Replaying measured loads in the simulator, and comparing both sides."""

from __future__ import annotations

import dataclasses

import pytest

from trunkline.engines import get_profile
from trunkline.fleet.replay import (
    Load,
    build_requests,
    outcome_summary,
    relative_errors,
    same_ranking,
    simulate_replay,
)
from trunkline.workloads.driver import Measured


def test_loads_build_the_prompts_they_describe() -> None:
    requests = build_requests(Load("shared", 10.0, 30, 200, 150, 8), seed=1)
    assert [r.prompt.num_tokens for r in requests] == [200] * 30
    assert all(100 <= t < 4000 for r in requests for t in r.prompt.token_ids)
    assert len({tuple(r.prompt.token_ids[:150]) for r in requests}) == 1
    assert len({tuple(r.prompt.token_ids[150:]) for r in requests}) == 30
    arrivals = [r.arrival for r in requests]
    assert arrivals == sorted(arrivals) and 1.0 < arrivals[-1] < 6.0  # about 30 / 10 per second
    mixed = build_requests(Load("mix", 10.0, 200, 64, 0, 48, long_share=0.3), seed=1)
    share = sum(r.prompt.num_tokens == 1500 for r in mixed) / len(mixed)
    assert 0.2 < share < 0.4
    assert build_requests(Load("shared", 10.0, 30, 200, 150, 8), seed=1)[5].prompt.token_ids == (
        requests[5].prompt.token_ids
    )


def test_a_rerun_with_other_content_keeps_the_arrivals_but_shares_no_prompt() -> None:
    # The ranking load runs once per policy on the same replicas: the second run must not find
    # the first one's prompts in the prefix cache (a fresh simulated engine would not).
    load = Load("alt", 0.8, 8, 64, 32, 16, long_every=2)
    first = build_requests(load, seed=1)
    again = build_requests(dataclasses.replace(load, content="least-loaded"), seed=1)
    other = build_requests(Load("other", 0.8, 8, 64, 32, 16, long_every=2), seed=1)
    assert [(r.arrival, r.prompt.num_tokens) for r in again] == [
        (r.arrival, r.prompt.num_tokens) for r in first
    ]
    blocks = {tuple(r.prompt.token_ids[:16]) for r in first}
    assert blocks.isdisjoint(tuple(r.prompt.token_ids[:16]) for r in again)
    assert blocks.isdisjoint(tuple(r.prompt.token_ids[:16]) for r in other)  # nor another load


def test_the_simulator_replays_the_measured_send_times() -> None:
    requests = build_requests(Load("l", 0.0, 3, 64, 0, 4), seed=2)
    sends = (0.5, 0.1, 2.0)
    measured = [Measured(r.request_id, "r0", s) for r, s in zip(requests, sends, strict=True)]
    outcomes = simulate_replay(get_profile("a100"), 1, requests, measured, "round-robin")
    assert sorted((o.request_id, o.arrival) for o in outcomes) == sorted(
        (m.request_id, m.sent) for m in measured
    )
    summary = outcome_summary(outcomes)
    assert summary["itl_mean_s"] > 0 and summary["ttft_p50_s"] > 0


def test_errors_and_rankings_compare_the_two_sides() -> None:
    real = {"a.ttft_p50_s": 0.1, "b.ttft_p50_s": 0.2, "ranking.rr.ttft_mean_s": 0.3,
            "ranking.ll.ttft_mean_s": 0.2}  # fmt: skip
    sim = {"a.ttft_p50_s": 0.11, "b.ttft_p50_s": 0.1, "ranking.rr.ttft_mean_s": 0.5,
           "ranking.ll.ttft_mean_s": 0.4}  # fmt: skip
    assert relative_errors(real, sim, "ttft_p50_s") == pytest.approx([0.1, 0.5])
    assert same_ranking(real, sim, "ranking.{}.ttft_mean_s")
    sim["ranking.ll.ttft_mean_s"] = 0.6
    assert not same_ranking(real, sim, "ranking.{}.ttft_mean_s")


@pytest.mark.parametrize(
    ("real_ll", "sim_ll"),
    [(0.270, 0.040), (0.183, 0.0989)],  # a tie on real vLLM, then a tie in the simulator
)
def test_a_tie_on_either_side_ranks_nothing(real_ll: float, sim_ll: float) -> None:
    real = {"ranking.rr.ttft_mean_s": 0.272, "ranking.ll.ttft_mean_s": real_ll}
    sim = {"ranking.rr.ttft_mean_s": 0.099, "ranking.ll.ttft_mean_s": sim_ll}
    assert not same_ranking(real, sim, "ranking.{}.ttft_mean_s")


def test_every_nth_request_can_be_long() -> None:
    requests = build_requests(Load("alt", 8.0, 6, 64, 0, 16, long_every=2), seed=1)
    assert [r.prompt.num_tokens for r in requests] == [1500, 64] * 3


def test_requests_can_open_with_one_of_several_shared_prefixes() -> None:
    requests = build_requests(Load("groups", 1.0, 40, 100, 64, 8, prefix_groups=4), seed=1)
    prefixes = [tuple(r.prompt.token_ids[:64]) for r in requests]
    assert len(set(prefixes)) == 4
    assert len({tuple(r.prompt.token_ids[64:]) for r in requests}) == 40
    # One prefix: the arrivals of a load built before groups existed.
    one = build_requests(Load("groups", 1.0, 40, 100, 64, 8), seed=1)
    assert len({tuple(r.prompt.token_ids[:64]) for r in one}) == 1
