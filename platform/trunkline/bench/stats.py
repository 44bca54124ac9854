"""Summaries of measured samples, shared by every benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["latency_summary_ms"]


def latency_summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, mean, min and max of latencies given in seconds, in milliseconds.

    Percentiles interpolate linearly between order statistics (numpy's default), so small
    samples give stable figures.
    """
    if len(samples_s) < 2:
        raise ValueError("a latency summary needs at least two samples")
    ms = [s * 1000.0 for s in samples_s]
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "p50_ms": cuts[49],
        "p90_ms": cuts[89],
        "p99_ms": cuts[98],
        "mean_ms": statistics.fmean(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }
