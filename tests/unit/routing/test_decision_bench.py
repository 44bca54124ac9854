"""The routing decision microbenchmark returns well-formed figures (no timing is asserted)."""

from __future__ import annotations

import math

from trunkline.bench.routing_decision import run_decision_bench


def test_the_decision_bench_reports_both_policies_and_the_p99_goal() -> None:
    result = run_decision_bench(endpoints=4, cached_prefixes=30, requests=40, seed=3)
    assert result["benchmark"] == "routing-decision"
    assert result["inputs"]["endpoints"] == 4
    assert result["inputs"]["cached_prefixes"] == 30
    assert list(result["runs"]) == ["round-robin", "prefix-aware"]
    for metrics in result["runs"].values():
        for clock in ("decision", "wall"):
            p50, p99 = metrics[f"{clock}_p50_ms"], metrics[f"{clock}_p99_ms"]
            assert math.isfinite(p50)
            assert 0 < p50 <= p99 <= metrics[f"{clock}_max_ms"]
    assert set(result["ratios"]) == {"prefix-aware"}
    [goal] = result["goals"]
    assert goal["target"] == "<= 1"
    assert goal["value"] == result["runs"]["prefix-aware"]["decision_p99_ms"]
    assert goal["met"] is (goal["value"] <= 1.0)
