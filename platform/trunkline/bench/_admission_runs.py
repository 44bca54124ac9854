"""The simulated runs of ``trunkline bench admission`` and the figures each one yields.

One fleet (N replicas of one profile) serves the ``b2b-tiers`` workload. :func:`measure_capacity`
saturates it without admission and counts completions per second in the steady part of the run;
every other run offers a multiple of that. :func:`run_variant` runs one load with or without the
gateway's admission policy and reduces it to flat metrics (per tier and per tenant).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trunkline.bench._admission_timing import RecordingPolicy, replay_decide_times
from trunkline.fleet import FleetResult, FleetSpec, PoolSpec, simulate
from trunkline.fleet.stats import quantile
from trunkline.gateway.admission import AdmissionPolicy
from trunkline.gateway.routing import make_policy
from trunkline.workloads.b2b_tiers import TieredB2bWorkload

__all__ = ["Scenario", "jain", "measure_capacity", "run_variant"]

TIERS = ("gold", "silver", "bronze")
BURST_POOL = "burst"


@dataclass(frozen=True, slots=True)
class Scenario:
    profile: str = "l40s"
    replicas: int = 2
    duration_s: float = 60.0
    seed: int = 1
    routing: str = "least-loaded"
    burst_replicas: int = 0
    """Replicas of a burst pool beside the shared one: only gold may use it (the tiers'
    ``may_use_burst``), and it costs only while it serves (it scales to zero between peaks)."""

    def spec(self) -> FleetSpec:
        pools = [PoolSpec("shared", self.profile, self.replicas)]
        if self.burst_replicas:
            pools.append(PoolSpec(BURST_POOL, self.profile, self.burst_replicas, burst=True))
        return FleetSpec(pools=tuple(pools), seed=self.seed)

    def without_burst(self) -> Scenario:
        return dataclasses.replace(self, burst_replicas=0)

    def workload(self, rate: float, noisy_tenant: str | None = None) -> TieredB2bWorkload:
        return TieredB2bWorkload(
            seed=self.seed, duration_s=self.duration_s, rate=rate, noisy_tenant=noisy_tenant
        )

    def run(
        self,
        rate: float,
        admission: bool | AdmissionPolicy,
        noisy_tenant: str | None = None,
    ) -> FleetResult:
        """One run; ``admission`` is a policy to use, or whether to use a default one."""
        policy = admission if isinstance(admission, AdmissionPolicy) else None
        if policy is None and admission:
            policy = AdmissionPolicy()
        return simulate(
            self.spec(),
            make_policy(self.routing),
            self.workload(rate, noisy_tenant),
            admission=policy,
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
    result = scenario.without_burst().run(probe_rate, admission=True)
    done = sum(1 for o in result.outcomes if o.status == "ok" and start <= o.arrival + o.e2e < end)
    return done / (end - start)


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    finite = [v for v in values if math.isfinite(v)]
    squares = sum(v * v for v in finite)
    return sum(finite) ** 2 / (len(finite) * squares) if squares else math.nan


def run_variant(
    scenario: Scenario, rate: float, admission: bool, capacity: float, *, replay: bool = False
) -> tuple[dict[str, float], FleetResult]:
    """One load: TTFT attainment and p90/p99 per tier, goodput over capacity, decisions,
    rejections by reason, the decision time, Jain fairness inside each tier, and the GPU time
    and cost of each pool. With ``replay`` (and admission), also the decision time of a
    tight-loop replay of the same decisions (:mod:`trunkline.bench._admission_timing`)."""
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
    metrics.update(_pool_costs(result))
    if admission and replay:
        # A second, identical run records the calls (kept out of the first: the record's many
        # objects make the garbage collector run inside decide calls).
        recorder = RecordingPolicy()
        scenario.run(rate, recorder)
        times = replay_decide_times(recorder)
        all_ms = sorted(1000 * s for _, s in times)
        reject_ms = sorted(1000 * s for outcome, s in times if outcome == "rejected")
        metrics["decision_replay_p99_ms"] = quantile(all_ms, 0.99)
        metrics["reject_decision_replay_p99_ms"] = quantile(reject_ms, 0.99)
    attainment = result.attainment_by("tenant", ttft_only=True)
    tiers_of = scenario.workload(rate).tenants
    for tier in TIERS:
        metrics[f"{tier}_jain"] = jain([v for t, v in attainment.items() if tiers_of[t] == tier])
    return metrics, result


def _pool_costs(result: FleetResult) -> dict[str, float]:
    """GPU-seconds and cost per pool: the shared pool runs (and is paid) the whole run, the burst
    pool only while it serves; plus the share of each tier's requests the burst pool served."""
    horizon = result.horizon_s
    shared = [e for e in result.engines if e.pool != BURST_POOL]
    burst = [e for e in result.engines if e.pool == BURST_POOL]
    out = {
        "shared_gpu_s": horizon * len(shared),
        "shared_cost_usd": sum(e.cost_per_hour for e in shared) * horizon / 3600,
    }
    if burst:
        out["burst_gpu_s"] = sum(e.busy_s for e in burst)
        out["burst_cost_usd"] = sum(e.cost_per_hour * e.busy_s for e in burst) / 3600
        out["burst_cost_share"] = out["burst_cost_usd"] / (
            out["burst_cost_usd"] + out["shared_cost_usd"]
        )
        served = [o for o in result.outcomes if o.endpoint is not None]
        for tier in TIERS:
            mine = [o for o in served if o.tier == tier]
            on_burst = sum(o.endpoint.startswith(f"{BURST_POOL}/") for o in mine if o.endpoint)
            out[f"{tier}_on_burst_share"] = on_burst / len(mine) if mine else 0.0
    return out


def others_attainment(result: FleetResult, tenants: Mapping[str, str], noisy: str) -> float:
    """Share of the tier-mates' requests whose first token came within their SLO (a rejected one
    missed): a tier-mate refused for the noisy tenant's sake shows here, not in the p90."""
    tier = tenants[noisy]
    mates = [o for o in result.outcomes if o.tenant != noisy and tenants[o.tenant] == tier]
    return sum(o.ttft_met for o in mates) / len(mates) if mates else math.nan


def others_p90(result: FleetResult, tenants: Mapping[str, str], noisy: str) -> float:
    """p90 TTFT of the noisy tenant's tier-mates (the tenants its noise could hurt)."""
    tier = tenants[noisy]
    ttfts = sorted(
        o.ttft
        for o in result.outcomes
        if o.status == "ok" and o.tenant != noisy and tenants[o.tenant] == tier
    )
    return quantile(ttfts, 0.9)
