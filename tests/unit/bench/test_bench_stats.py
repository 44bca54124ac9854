"""Latency summaries and the interleaved timing of variants."""

from __future__ import annotations

import pytest

from trunkline.bench.stats import latency_summary_ms
from trunkline.bench.timing import block_schedule, time_interleaved


def test_latency_summary_interpolates_percentiles_in_milliseconds() -> None:
    samples_s = [ms / 1000 for ms in range(1, 101)]  # 1 ms … 100 ms

    summary = latency_summary_ms(samples_s)

    assert summary == pytest.approx(
        {
            "p50_ms": 50.5,
            "p90_ms": 90.1,
            "p99_ms": 99.01,
            "mean_ms": 50.5,
            "min_ms": 1.0,
            "max_ms": 100.0,
        }
    )


def test_latency_summary_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="two samples"):
        latency_summary_ms([0.001])


def test_blocks_alternate_the_lead_and_end_with_a_partial_block() -> None:
    schedule = list(block_schedule(["direct", "gateway"], count=12, block=5))

    assert schedule == [
        ("direct", 5),
        ("gateway", 5),
        ("gateway", 5),
        ("direct", 5),
        ("direct", 2),
        ("gateway", 2),
    ]


def test_no_calls_means_no_blocks() -> None:
    assert list(block_schedule(["a", "b"], count=0, block=5)) == []


def test_interleaved_timing_calls_each_variant_count_times_in_blocks() -> None:
    order: list[str] = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}

    samples = time_interleaved(calls, count=3, block=2)

    assert order == ["a", "a", "b", "b", "b", "a"]
    assert {name: len(values) for name, values in samples.items()} == {"a": 3, "b": 3}
    assert all(value >= 0 for values in samples.values() for value in values)


def test_a_failing_call_stops_the_measurement() -> None:
    def fail() -> None:
        raise RuntimeError("engine answered 500")

    with pytest.raises(RuntimeError, match="500"):
        time_interleaved({"a": lambda: None, "b": fail}, count=3, block=2)
