"""Random draws shared by the workload generators (each generator owns its seeded RNG)."""

from __future__ import annotations

import math
import random

__all__ = ["length", "poisson_arrivals"]


def length(rng: random.Random, mean: float, *, sigma: float = 0.5, low: int = 1, high: int) -> int:
    """A log-normal token count with the given mean, clipped to ``[low, high]``."""
    if mean <= 0:
        return low
    mu = math.log(mean) - sigma * sigma / 2
    return max(low, min(high, round(rng.lognormvariate(mu, sigma))))


def poisson_arrivals(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    """Arrival times of a Poisson process of ``rate`` per second on ``[start, end)``."""
    times: list[float] = []
    if rate <= 0:
        return times
    at = start + rng.expovariate(rate)
    while at < end:
        times.append(at)
        at += rng.expovariate(rate)
    return times
