"""``b2b-tiers``: the B2B shape with tiers set by traffic share and equal tenants inside a tier.

The ``b2b`` workload deals tiers over Zipf-ranked tenants, so its few gold tenants send most of
the traffic (over half with the defaults): at twice the capacity gold alone would exceed it. An
SLO-tier benchmark needs the mix a provider sells instead — gold a minority of the traffic — and
equal-weight tenants inside each tier, so fairness between them can be measured. Here every tier
has ``*_tenants`` tenants sharing ``*_share`` of the traffic equally; ``noisy`` multiplies one
tenant's rate (a tenant at 10x its share). Prompts (a per-tenant system prompt, then the user's
text) and per-tenant bursts follow ``b2b``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trunkline.workloads.prompts import build_prompt, segment, stable_key
from trunkline.workloads.sampling import length, poisson_arrivals
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["TieredB2bWorkload"]

_TIERS = ("gold", "silver", "bronze")


@dataclass(frozen=True, slots=True)
class TieredB2bWorkload:
    name: str = "b2b-tiers"
    seed: int = 1
    duration_s: float = 120.0
    rate: float = 10.0
    """Mean requests per second over all tenants, bursts included (``noisy`` adds on top)."""
    gold_tenants: int = 4
    silver_tenants: int = 6
    bronze_tenants: int = 10
    gold_share: float = 0.15
    silver_share: float = 0.30
    """Shares of the traffic; bronze has the rest."""
    noisy_tenant: str | None = None
    noisy_factor: float = 10.0
    burst_factor: float = 3.0
    burst_fraction: float = 0.1
    burst_s: float = 10.0
    system_tokens: float = 800.0
    user_tokens: float = 400.0
    answer_tokens: float = 200.0

    def __post_init__(self) -> None:
        if min(self.gold_share, self.silver_share) < 0 or self.gold_share + self.silver_share > 1:
            raise ValueError("gold_share and silver_share must be >= 0 and sum to at most 1")
        if min(self.gold_tenants, self.silver_tenants, self.bronze_tenants) < 1:
            raise ValueError("every tier needs at least one tenant")
        if self.noisy_tenant is not None and self.noisy_tenant not in self.tenants:
            raise ValueError(f"noisy_tenant {self.noisy_tenant!r} is not one of the tenants")

    @property
    def tenants(self) -> Mapping[str, str]:
        counts = (self.gold_tenants, self.silver_tenants, self.bronze_tenants)
        return {
            f"{tier}-{i:02d}": tier for tier, count in zip(_TIERS, counts, strict=True)
            for i in range(count)
        }  # fmt: skip

    def tenant_rate(self, tenant: str) -> float:
        """Mean requests per second of one tenant (its bursts included)."""
        tier = self.tenants[tenant]
        share = {
            "gold": (self.gold_share, self.gold_tenants),
            "silver": (self.silver_share, self.silver_tenants),
            "bronze": (1.0 - self.gold_share - self.silver_share, self.bronze_tenants),
        }[tier]
        rate = self.rate * share[0] / share[1]
        return rate * (self.noisy_factor if tenant == self.noisy_tenant else 1.0)

    def requests(self) -> Iterator[WorkloadRequest]:
        # One random stream per tenant (and per request): a noisy tenant changes nobody else's.
        names = list(self.tenants)
        burst_gain = 1.0 - self.burst_fraction + self.burst_fraction * self.burst_factor
        arrivals: list[tuple[float, int, int]] = []
        for index, tenant in enumerate(names):
            rng = random.Random(stable_key("b2b-tiers-arrivals", self.seed, index))
            base = self.tenant_rate(tenant) / burst_gain
            times = [
                at
                for start, end, factor in self._periods(rng)
                for at in poisson_arrivals(rng, base * factor, start, end)
            ]
            arrivals += [(at, index, count) for count, at in enumerate(times)]
        heapq.heapify(arrivals)
        while arrivals:
            at, index, count = heapq.heappop(arrivals)
            yield self._request(at, index, count, names[index])

    def _periods(self, rng: random.Random) -> Iterator[tuple[float, float, float]]:
        """``(start, end, rate factor)`` covering ``[0, duration_s)``."""
        if self.burst_fraction <= 0:
            yield 0.0, self.duration_s, 1.0
            return
        quiet_s = self.burst_s * (1.0 - self.burst_fraction) / self.burst_fraction
        at = 0.0
        while at < self.duration_s:
            quiet_end = min(at + rng.expovariate(1.0 / quiet_s), self.duration_s)
            yield at, quiet_end, 1.0
            burst_end = min(quiet_end + self.burst_s, self.duration_s)
            if quiet_end < burst_end:
                yield quiet_end, burst_end, self.burst_factor
            at = burst_end

    def _request(self, at: float, tenant: int, count: int, name: str) -> WorkloadRequest:
        rng = random.Random(stable_key("b2b-tiers-request", self.seed, tenant, count))
        system_rng = random.Random(stable_key("b2b-tiers-system-length", self.seed, tenant))
        system = length(system_rng, self.system_tokens, high=4 * int(self.system_tokens))
        user = length(rng, self.user_tokens, sigma=0.8, high=8 * int(self.user_tokens))
        answer = length(rng, self.answer_tokens, sigma=0.8, high=8 * int(self.answer_tokens))
        parts = [
            segment(stable_key("b2b-tiers-system", self.seed, tenant), system),
            segment(stable_key("b2b-tiers-user", self.seed, tenant, count), user),
        ]
        return WorkloadRequest(f"{name}-{count}", at, name, build_prompt(parts), answer)
