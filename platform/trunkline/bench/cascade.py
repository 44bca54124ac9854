"""Model cascading, simulated: always the large model against a small-first cascade.

An easy-heavy workload with labelled difficulty (:mod:`trunkline.workloads.difficulty`) runs
through the fleet simulator twice, in virtual time:

- ``always-large``: every request on the large model's pool (Llama-3-70B on 4 x H100);
- ``cascade``: every request on the small model's pool (Llama-3-8B on one L40S) first; the
  gateway's own check (:func:`trunkline.gateway.cascade.escalation_reason`, a mean-logprob
  threshold) judges each answer, and escalated requests start on the large pool when the
  small answer ends, as the gateway does (the first attempt runs unstreamed).

A simulated engine has no real tokens to be unsure about, so each answer's mean token
log-probability is drawn from the distribution of its label (easy answers confident, hard
ones not, overlapping: some hard answers slip through, some easy ones escalate); the check
is the gateway's code on those numbers.

Cost is capacity cost at equal SLO: for each pool and the mix of requests it serves, the
highest rate one replica carries while the tier's SLO (TTFT and inter-token) holds for 95 %
of its requests; a request then costs the pool's price per hour over that rate. The cascade
pays the small pool for every request plus the large pool for the escalated share (busy
time would not do: a batching engine is busy whenever any request runs). Latency comes from
a deployment at ``rate`` with each pool given the replicas that capacity calls for; it is
what the client sees: an escalated request waits for the small answer, then the large one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trunkline.bench._cascade_fleet import capacity, run_on
from trunkline.bench.report import BenchResult, GoalSpec, Metrics, Runs, print_table, write_result

if TYPE_CHECKING:
    from trunkline.fleet import FleetResult, PoolSpec
    from trunkline.workloads.difficulty import LabelledRequest
    from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["CascadeBenchConfig", "cascade_bench", "run_cascade_bench", "write_cascade_bench"]

TABLE = [
    "requests",
    "escalation_rate",
    "cost_per_1k_requests_usd",
    "capacity_rps_small",
    "capacity_rps_large",
    "deployed_replicas_small",
    "deployed_replicas_large",
    "deployed_cost_per_hour_usd",
    "slo_attainment",
    "ttft_p50_s",
    "ttft_p90_s",
    "e2e_p50_s",
    "e2e_p90_s",
    "added_latency_p50_s",
    "added_latency_p90_s",
    "hard_answered_small",
    "easy_escalated",
]


@dataclass(frozen=True, slots=True)
class CascadeBenchConfig:
    seed: int = 1
    requests: int = 1000
    rate: float = 20.0
    """Questions per second of the deployment the latencies are measured on."""
    hard_share: float = 0.2
    tier: str = "gold"
    """The tier the traffic is sold at: its TTFT and inter-token SLOs size every pool."""
    min_mean_logprob: float = -1.0
    """The cascade's check: escalate below this mean token log-probability."""
    slo_attainment: float = 0.95
    """A replica's capacity: the highest rate at which its requests meet the SLO this often."""
    policy: str = "least-loaded"


def run_cascade_bench(*, seed: int = 1, requests: int = 1000) -> dict[str, Any]:
    """The benchmark's ``result.json`` content (for ``trunkline bench routing``)."""
    result, _samples = cascade_bench(CascadeBenchConfig(seed=seed, requests=requests))
    return result.to_json()


def write_cascade_bench(out_dir: Path, config: CascadeBenchConfig) -> BenchResult:
    """Run, print the table, write ``out_dir/result.json`` and ``out_dir/cascade.png``."""
    from trunkline.bench.plot import plot_latency_cdf

    result, samples = cascade_bench(config)
    print_table(result, metrics=TABLE)
    write_result(out_dir, result)
    plot_latency_cdf(
        samples,
        out_dir / "cascade.png",
        title="Client-seen latency per request, always-large vs cascade (simulated)",
    )
    return result


def cascade_bench(config: CascadeBenchConfig) -> tuple[BenchResult, dict[str, list[float]]]:
    """The result, and each variant's client-seen end-to-end latencies in ms (for the plot)."""
    from trunkline.workloads.difficulty import DifficultyWorkload

    workload = DifficultyWorkload(
        seed=config.seed,
        rate=config.rate,
        hard_share=config.hard_share,
        duration_s=config.requests / config.rate,
        tier=config.tier,
    )
    labelled = list(workload.labelled())[: config.requests]
    everything = [item.request for item in labelled]
    escalate = _escalations(labelled, config)
    hard_mix = [r for r in everything if r.request_id in escalate]
    small, large = _pools()
    options = {"attainment": config.slo_attainment, "policy": config.policy, "seed": config.seed}
    tenants = workload.tenants
    large_all = capacity(large, everything, tenants, **options)  # type: ignore[arg-type]
    small_all = capacity(small, everything, tenants, **options)  # type: ignore[arg-type]
    large_hard = capacity(large, hard_mix, tenants, **options)  # type: ignore[arg-type]

    def deploy(pool: PoolSpec, rate: float, cap: float, reqs: list[WorkloadRequest]) -> FleetResult:
        replicas = max(1, math.ceil(rate / cap))
        return run_on(pool, replicas, reqs, tenants, policy=config.policy, seed=config.seed)

    share = len(escalate) / len(labelled)
    baseline = deploy(large, config.rate, large_all.rate, everything)
    first = deploy(small, config.rate, small_all.rate, everything)
    second = deploy(
        large, config.rate * share, large_hard.rate, _escalated(first, labelled, escalate)
    )
    per_request = {
        "always-large": large.hourly_cost / 3600 / large_all.rate,
        "cascade": small.hourly_cost / 3600 / small_all.rate
        + share * large.hourly_cost / 3600 / large_hard.rate,
    }
    runs: Runs = {
        "always-large": {
            **_common(len(labelled), 0.0, per_request["always-large"]),
            "capacity_rps_small": 0.0,
            "capacity_rps_large": large_all.rate,
            **_deployed([baseline]),
            **_latency("ttft", [o.ttft for o in baseline.outcomes if o.status == "ok"]),
            **_latency("e2e", [o.e2e for o in baseline.outcomes if o.status == "ok"]),
            "added_latency_p50_s": 0.0,
            "added_latency_p90_s": 0.0,
            "hard_answered_small": 0.0,
            "easy_escalated": 0.0,
        },
        "cascade": {
            **_common(len(labelled), share, per_request["cascade"]),
            "capacity_rps_small": small_all.rate,
            "capacity_rps_large": large_hard.rate,
            **_deployed([first, second]),
            **_cascade_latency(first, second, escalate),
            **_labels(labelled, escalate),
        },
    }
    goals = [
        GoalSpec(
            "cascade cost per request / always-large (at capacity, equal SLO)",
            "<= 0.6",
            lambda r: (
                r["cascade"]["cost_per_1k_requests_usd"]
                / r["always-large"]["cost_per_1k_requests_usd"]
            ),
        )
    ]
    inputs = {
        "workload": "difficulty", "seed": config.seed, "requests": len(labelled),
        "rate": config.rate, "hard_share": config.hard_share, "tier": config.tier,
        "check": f"mean token logprob >= {config.min_mean_logprob}",
        "small": f"{small.name} at ${small.hourly_cost:.2f}/h per replica",
        "large": f"{large.name} at ${large.hourly_cost:.2f}/h per replica",
        "slo_attainment": config.slo_attainment, "policy": config.policy,
    }  # fmt: skip
    result = BenchResult.build("cascade", simulated=True, inputs=inputs, runs=runs, goals=goals)
    samples = {
        "always-large": [o.e2e * 1000 for o in baseline.outcomes if o.status == "ok"],
        "cascade": [v * 1000 for v in _client_e2e(first, second).values()],
    }
    return result, samples


def _pools() -> tuple[PoolSpec, PoolSpec]:
    from trunkline.engines.hardware import ACCELERATORS, MODELS
    from trunkline.engines.profiles import derive_profile, get_profile
    from trunkline.fleet import FLAVOR_PRICES, PoolSpec

    large_profile = derive_profile(
        ACCELERATORS["h100"], MODELS["llama-3-70b"], tensor_parallel=4, name="h100x4"
    )
    small = PoolSpec("small-8b-l40s", get_profile("l40s"))
    large = PoolSpec("large-70b-h100x4", large_profile, cost_per_hour=4 * FLAVOR_PRICES["h100"])
    return small, large


def _common(count: int, share: float, per_request: float) -> Metrics:
    return {
        "requests": float(count),
        "escalation_rate": share,
        "cost_per_1k_requests_usd": 1000 * per_request,
    }


def _deployed(results: Sequence[FleetResult]) -> Metrics:
    """The deployment at the configured rate: replicas per pool, their price, SLO attainment
    of the requests each pool served."""
    by_pool = {r.engines[0].pool: r for r in results if r.engines}
    outcomes = [o for r in results for o in r.outcomes]
    return {
        "deployed_replicas_small": float(sum(len(r.engines) for p, r in by_pool.items()
                                             if p.startswith("small"))),
        "deployed_replicas_large": float(sum(len(r.engines) for p, r in by_pool.items()
                                             if p.startswith("large"))),
        "deployed_cost_per_hour_usd": sum(e.cost_per_hour for r in results for e in r.engines),
        "slo_attainment": sum(o.slo_met for o in outcomes) / len(outcomes) if outcomes else 0.0,
    }  # fmt: skip


def _escalations(labelled: Sequence[LabelledRequest], config: CascadeBenchConfig) -> set[str]:
    """Request ids the gateway's check escalates, on each answer's drawn mean logprob."""
    from trunkline.gateway.cascade import Answer, escalation_reason
    from trunkline.snapshot import CascadeEntry

    checks = CascadeEntry(
        "large", (), on_truncation=False, on_refusal=False,
        min_mean_logprob=config.min_mean_logprob,
    )  # fmt: skip
    rng = random.Random(config.seed * 7919)
    escalated = set()
    for item in labelled:
        # Easy answers: confident (about -0.4); hard ones: unsure (about -1.5); they overlap.
        mean = rng.gauss(-1.5, 0.45) if item.hard else rng.gauss(-0.4, 0.3)
        answer = Answer("", "stop", None, (min(mean, 0.0),))
        if escalation_reason(answer, checks) is not None:
            escalated.add(item.request.request_id)
    return escalated


def _escalated(
    first: FleetResult, labelled: Sequence[LabelledRequest], escalate: set[str]
) -> list[WorkloadRequest]:
    ends = {o.request_id: o.arrival + o.e2e for o in first.outcomes if o.status == "ok"}
    moved = [
        replace(item.request, arrival=ends[item.request.request_id])
        for item in labelled
        if item.request.request_id in escalate and item.request.request_id in ends
    ]
    return sorted(moved, key=lambda r: r.arrival)


def _client_e2e(first: FleetResult, second: FleetResult) -> dict[str, float]:
    """Arrival to the last token the client gets, per request, through the cascade."""
    seen = {o.request_id: o.e2e for o in first.outcomes if o.status == "ok"}
    for o in second.outcomes:
        if o.status == "ok":
            seen[o.request_id] += o.e2e
    return seen


def _cascade_latency(first: FleetResult, second: FleetResult, escalate: set[str]) -> Metrics:
    small_e2e = {o.request_id: o.e2e for o in first.outcomes if o.status == "ok"}
    # The first attempt is unstreamed: a kept answer's first byte comes when it ends; an
    # escalated one's comes with the large model's first token.
    ttft = dict(small_e2e)
    for o in second.outcomes:
        if o.status == "ok":
            ttft[o.request_id] += o.ttft
    added = [small_e2e[r] for r in escalate if r in small_e2e]
    return {
        **_latency("ttft", list(ttft.values())),
        **_latency("e2e", list(_client_e2e(first, second).values())),
        "added_latency_p50_s": _quantile(added, 0.5),
        "added_latency_p90_s": _quantile(added, 0.9),
    }


def _labels(labelled: Sequence[LabelledRequest], escalate: set[str]) -> Metrics:
    hard = [i for i in labelled if i.hard]
    easy = [i for i in labelled if not i.hard]
    return {
        "hard_answered_small": _share(hard, lambda i: i.request.request_id not in escalate),
        "easy_escalated": _share(easy, lambda i: i.request.request_id in escalate),
    }


def _latency(name: str, values: list[float]) -> Metrics:
    return {f"{name}_p50_s": _quantile(values, 0.5), f"{name}_p90_s": _quantile(values, 0.9)}


def _quantile(values: list[float], q: float) -> float:
    from trunkline.fleet.stats import quantile

    return quantile(sorted(values), q) if values else math.nan


def _share(items: Sequence[LabelledRequest], test: Any) -> float:
    return sum(1 for i in items if test(i)) / len(items) if items else math.nan
