"""``b2b``: managed AI for enterprises — many tenants on three tiers, each with its own system
prompt, and bursts.

Tenants' shares of the traffic follow a Zipf law; tiers are dealt in the proportions of
``gold_share`` and ``silver_share`` (the rest bronze). Each tenant alternates quiet and burst
periods: bursts start as a Poisson process (a ``burst_fraction`` of the time on average), last
``burst_s`` and multiply the tenant's rate by ``burst_factor``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trunkline.workloads.prompts import build_prompt, segment, stable_key
from trunkline.workloads.sampling import length, poisson_arrivals
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["B2bWorkload"]


@dataclass(frozen=True, slots=True)
class B2bWorkload:
    name: str = "b2b"
    seed: int = 1
    duration_s: float = 600.0
    rate: float = 10.0
    """Mean requests per second over all tenants outside bursts."""
    tenants_count: int = 40
    gold_share: float = 0.2
    silver_share: float = 0.3
    zipf: float = 0.8
    burst_factor: float = 5.0
    burst_fraction: float = 0.1
    burst_s: float = 30.0
    system_tokens: float = 800.0
    user_tokens: float = 400.0
    answer_tokens: float = 200.0

    @property
    def tenants(self) -> Mapping[str, str]:
        gold = round(self.tenants_count * self.gold_share)
        silver = round(self.tenants_count * self.silver_share)
        tiers = ["gold"] * gold + ["silver"] * silver
        tiers += ["bronze"] * (self.tenants_count - len(tiers))
        return {f"tenant-{i:03d}": tier for i, tier in enumerate(tiers)}

    def requests(self) -> Iterator[WorkloadRequest]:
        rng = random.Random(self.seed)
        names = list(self.tenants)
        weights = [1.0 / (k + 1) ** self.zipf for k in range(len(names))]
        total = sum(weights)
        arrivals: list[tuple[float, int]] = []
        for tenant, weight in enumerate(weights):
            rate = self.rate * weight / total
            for start, end, factor in self._periods(rng):
                arrivals += [
                    (at, tenant) for at in poisson_arrivals(rng, rate * factor, start, end)
                ]
        heapq.heapify(arrivals)
        index = 0
        while arrivals:
            at, tenant = heapq.heappop(arrivals)
            yield self._request(rng, index, at, tenant, names[tenant])
            index += 1

    def _periods(self, rng: random.Random) -> Iterator[tuple[float, float, float]]:
        """``(start, end, rate factor)`` covering ``[0, duration_s)``."""
        quiet_s = self.burst_s * (1.0 - self.burst_fraction) / max(self.burst_fraction, 1e-9)
        at = 0.0
        while at < self.duration_s:
            quiet_end = min(at + rng.expovariate(1.0 / quiet_s), self.duration_s)
            yield at, quiet_end, 1.0
            burst_end = min(quiet_end + self.burst_s, self.duration_s)
            if quiet_end < burst_end:
                yield quiet_end, burst_end, self.burst_factor
            at = burst_end

    def _request(
        self, rng: random.Random, index: int, at: float, tenant: int, name: str
    ) -> WorkloadRequest:
        system_rng = random.Random(stable_key("b2b-system-length", self.seed, tenant))
        system = length(system_rng, self.system_tokens, high=4 * int(self.system_tokens))
        user = length(rng, self.user_tokens, sigma=0.8, high=8 * int(self.user_tokens))
        answer = length(rng, self.answer_tokens, sigma=0.8, high=8 * int(self.answer_tokens))
        parts = [
            segment(stable_key("b2b-system", self.seed, tenant), system),
            segment(stable_key("b2b-user", self.seed, index), user),
        ]
        return WorkloadRequest(f"b2b-{index}", at, name, build_prompt(parts), answer)
