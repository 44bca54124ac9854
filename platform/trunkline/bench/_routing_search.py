"""The operating point of a routing policy: the highest offered rate that still meets the SLO.

The routing benchmark compares policies "at equal TTFT SLO": for each one it searches the
workload's rate knob for the highest value at which the p90 time to first token stays within
the objective (1 s), then reads throughput and goodput off the run at that rate. The search is
pure over a ``measure(rate) -> metrics`` callable, so it is tested without a simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from trunkline.bench.report import Metrics

__all__ = ["SLO_TTFT_P90_S", "OperatingPoint", "find_operating_point", "goodput_rps"]

SLO_TTFT_P90_S = 1.0
"""The objective every operating point meets: p90 TTFT at most one second."""


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    rate: float
    """The highest rate found that meets the SLO; 0 when even the lowest tried missed it."""
    metrics: Metrics
    """The run at ``rate`` (the lowest run tried when none met the SLO)."""
    runs: int
    """Simulations the search took."""


def meets_slo(
    metrics: Metrics, ttft_p90_s: float = SLO_TTFT_P90_S, tpot_p90_s: float | None = None
) -> bool:
    """The run finished requests and its p90 TTFT (and p90 TPOT, when bounded) is within the
    objective."""
    bounds = {"ttft_p90_s": ttft_p90_s}
    if tpot_p90_s is not None:
        bounds["tpot_p90_s"] = tpot_p90_s
    return metrics.get("completed", 0.0) > 0 and all(
        math.isfinite(metrics.get(key, math.nan)) and metrics[key] <= bound
        for key, bound in bounds.items()
    )


def find_operating_point(
    measure: Callable[[float], Metrics],
    start: float,
    *,
    rel_tol: float = 0.08,
    max_runs: int = 9,
    ttft_p90_s: float = SLO_TTFT_P90_S,
    tpot_p90_s: float | None = None,
) -> OperatingPoint:
    """Double (or halve) ``start`` until the SLO flips, then bisect until ``rel_tol``.

    The rate is assumed to hurt monotonically (more load, later first tokens). At most
    ``max_runs`` simulations; the answer is always a rate that was run and met the SLO.
    """
    if start <= 0:
        raise ValueError("the search needs a positive starting rate")
    tried: dict[float, Metrics] = {}

    def run(rate: float) -> bool:
        tried[rate] = measure(rate)
        return meets_slo(tried[rate], ttft_p90_s, tpot_p90_s)

    low: float | None = None
    high: float | None = None
    rate = start
    if run(rate):
        low = rate
        while len(tried) < max_runs and high is None:
            rate *= 2
            if run(rate):
                low = rate
            else:
                high = rate
    else:
        high = rate
        while len(tried) < max_runs and low is None:
            rate /= 2
            if run(rate):
                low = rate
            else:
                high = rate
    while low is not None and high is not None and len(tried) < max_runs:
        if high / low <= 1 + rel_tol:
            break
        middle = math.sqrt(low * high)
        if run(middle):
            low = middle
        else:
            high = middle
    if low is None:
        return OperatingPoint(0.0, tried[min(tried)], len(tried))
    return OperatingPoint(low, tried[low], len(tried))


def goodput_rps(
    ttfts_ok: Iterable[float], horizon_s: float, slo_s: float = SLO_TTFT_P90_S
) -> float:
    """Requests per second that finished with a first token within ``slo_s``."""
    if horizon_s <= 0:
        return math.nan
    return sum(1 for ttft in ttfts_ok if ttft <= slo_s) / horizon_s
