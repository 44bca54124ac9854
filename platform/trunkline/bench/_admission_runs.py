"""The simulated runs of ``trunkline bench admission`` and the figures each one yields.

One fleet (N replicas of one profile) serves the ``b2b-tiers`` workload. :func:`measure_capacity`
saturates it without admission and counts completions per second in the steady part of the run;
every other run offers a multiple of that. :func:`run_variant` runs one load with or without the
gateway's admission policy and reduces it to flat metrics (per tier and per tenant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trunkline.fleet import FleetResult, FleetSpec, PoolSpec, simulate
from trunkline.fleet.stats import quantile
from trunkline.gateway.admission import AdmissionPolicy
from trunkline.gateway.routing import make_policy
from trunkline.workloads.b2b_tiers import TieredB2bWorkload

__all__ = ["Scenario", "jain", "measure_capacity", "run_variant"]

TIERS = ("gold", "silver", "bronze")


@dataclass(frozen=True, slots=True)
class Scenario:
    profile: str = "l40s"
    replicas: int = 2
    duration_s: float = 60.0
    seed: int = 1
    routing: str = "least-loaded"

    def spec(self) -> FleetSpec:
        return FleetSpec(pools=(PoolSpec("shared", self.profile, self.replicas),), seed=self.seed)

    def workload(self, rate: float, noisy_tenant: str | None = None) -> TieredB2bWorkload:
        return TieredB2bWorkload(
            seed=self.seed, duration_s=self.duration_s, rate=rate, noisy_tenant=noisy_tenant
        )

    def run(self, rate: float, admission: bool, noisy_tenant: str | None = None) -> FleetResult:
        return simulate(
            self.spec(),
            make_policy(self.routing),
            self.workload(rate, noisy_tenant),
            admission=AdmissionPolicy() if admission else None,
        )


def steady_window(scenario: Scenario) -> tuple[float, float]:
    """The second half of the arrivals: by then a loaded engine's batch has filled (a request
    takes ~20 s to decode on a full L40S) and nothing has drained yet."""
    return scenario.duration_s / 2, scenario.duration_s


def measure_capacity(scenario: Scenario, probe_rate: float) -> float:
    """Completions per second of the saturated fleet (``probe_rate`` offered, admission keeping
    the engines busy) in the steady window. First come, first served at twice the capacity
    completes the same within 2 % (measured on 2 x L40S), at twice the simulation cost."""
    start, end = steady_window(scenario)
    result = scenario.run(probe_rate, admission=True)
    done = sum(1 for o in result.outcomes if o.status == "ok" and start <= o.arrival + o.e2e < end)
    return done / (end - start)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    finite = [v for v in values if math.isfinite(v)]
    squares = sum(v * v for v in finite)
    return sum(finite) ** 2 / (len(finite) * squares) if squares else math.nan


def run_variant(
    scenario: Scenario, rate: float, admission: bool, capacity: float
) -> tuple[dict[str, float], FleetResult]:
    """One load: TTFT attainment and p90/p99 per tier, goodput over capacity, decisions,
    rejections by reason, the decision time, and Jain fairness inside each tier."""
    result = scenario.run(rate, admission)
    raw = result.metrics()
    metrics: dict[str, float] = {"offered_rps": rate, "requests": raw["requests"]}
    by_tier = result.ttft_by("tier")
    for tier in TIERS:
        metrics[f"{tier}_ttft_attainment"] = raw.get(f"ttft_attainment_{tier}", math.nan)
        ttfts = by_tier.get(tier, [])
        metrics[f"{tier}_ttft_p90_s"] = quantile(ttfts, 0.9)
        metrics[f"{tier}_ttft_p99_s"] = quantile(ttfts, 0.99)
    # Goodput in the steady window: requests whose first token came within their SLO, by the
    # time it came (arrival and drain edges left out, where a run is not at its offered load).
    start, end = steady_window(scenario)
    met = sum(1 for o in result.outcomes if o.ttft_met and start <= o.arrival + o.ttft < end)
    metrics["goodput_rps"] = met / (end - start)
    metrics["goodput_over_capacity"] = metrics["goodput_rps"] / capacity
    metrics["itl_p99_s"] = raw["itl_p99_s"]
    rejected = [o for o in result.outcomes if o.status.startswith("rejected")]
    if rejected:
        at_once = sum(o.decision == "rejected" for o in rejected)
        metrics["rejected_at_once_share"] = at_once / len(rejected)
        bronze = sorted(o.held_s for o in rejected if o.tier == "bronze")
        metrics["bronze_time_to_reject_p99_s"] = quantile(bronze, 0.99)
    for key, value in raw.items():
        if (
            key.startswith(("decisions_", "rejected_"))
            or key.endswith("_ms")
            or key == "held_p99_s"
        ):
            metrics[key] = value
    attainment = result.attainment_by("tenant", ttft_only=True)
    tiers_of = scenario.workload(rate).tenants
    for tier in TIERS:
        metrics[f"{tier}_jain"] = jain([v for t, v in attainment.items() if tiers_of[t] == tier])
    return metrics, result


def others_p90(result: FleetResult, tenants: Mapping[str, str], noisy: str) -> float:
    """p90 TTFT of the noisy tenant's tier-mates (the tenants its noise could hurt)."""
    tier = tenants[noisy]
    ttfts = sorted(
        o.ttft
        for o in result.outcomes
        if o.status == "ok" and o.tenant != noisy and tenants[o.tenant] == tier
    )
    return quantile(ttfts, 0.9)
