"""Arrival rates per key (a tier of a pool, a tenant), exponentially decayed: O(1) per event.

Admission uses them to see how much of a pool's completions the tiers above a request leave to
it, and which tenant sends far more than its tier-mates.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

__all__ = ["DecayingRates"]


class DecayingRates:
    """``observe(key, now)`` per event; ``rate(key, now)`` is events per second over ~``tau_s``."""

    def __init__(self, tau_s: float = 10.0) -> None:
        self.tau_s = tau_s
        self._state: dict[Hashable, tuple[float, float]] = {}  # key -> (rate, at)

    def observe(self, key: Hashable, now: float) -> None:
        self._state[key] = (self.rate(key, now) + 1.0 / self.tau_s, now)

    def rate(self, key: Hashable, now: float) -> float:
        state = self._state.get(key)
        if state is None:
            return 0.0
        rate, at = state
        return rate * math.exp(-max(now - at, 0.0) / self.tau_s)
