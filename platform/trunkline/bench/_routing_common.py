"""What the sections of ``trunkline bench routing`` share: the configuration, the result of
one section, and one simulated run of a workload under a routing policy.

A :class:`Section` is one scenario of issue 4 (Mooncake cache hits, care throughput, …): its
variants' metrics, the goals measured on them and the rows its table prints. Operating-point
searches are memoised in :class:`SimRunner`, so the scaling section reuses the two-replica
searches of the care and Azure sections instead of running them again.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from trunkline.bench._routing_search import (
    SLO_TTFT_P90_S,
    OperatingPoint,
    find_operating_point,
    goodput_rps,
)
from trunkline.bench.report import GoalSpec, Metrics, Runs
from trunkline.kit.collector import collector_paused

if TYPE_CHECKING:
    from trunkline.fleet import FleetSpec, RequestOutcome
    from trunkline.workloads import Workload

__all__ = [
    "BASELINES",
    "CANDIDATES",
    "RoutingBenchConfig",
    "Section",
    "SimRunner",
    "available_policies",
    "ratio_of",
    "value_of",
]

BASELINES = ("round-robin", "least-loaded")
CANDIDATES = ("prefix-aware", "prefix-only", "precise-prefix", "cost-aware")


@dataclass(frozen=True, slots=True)
class RoutingBenchConfig:
    sections: tuple[str, ...]
    policy: str = "prefix-aware"
    """The policy the goals are measured on ("ours")."""
    candidates: tuple[str, ...] = CANDIDATES
    """Further policies the Mooncake section shows (those registered at run time)."""
    hetero_policy: str = "cost-aware"
    seed: int = 1
    mooncake_limit: int | None = 3000
    """Replay only the first N requests of the Mooncake conversation trace (None: all 12,031)."""
    care_spec: str = "care:duration_s=120,tenants_count=48,preamble_tokens=6000"
    azure_window_s: float = 60.0
    max_search_runs: int = 9
    """Simulations one operating-point search may take."""
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.sections:
            raise ValueError("name at least one section")
        if self.mooncake_limit is not None and self.mooncake_limit < 1:
            raise ValueError("--mooncake-limit must be at least 1")
        if self.max_search_runs < 2:
            raise ValueError("an operating-point search needs at least two runs")
        if self.azure_window_s <= 0:
            raise ValueError("--azure-window must be positive")


@dataclass(slots=True)
class Section:
    name: str
    title: str
    runs: Runs
    goals: list[GoalSpec]
    rows: list[str]
    inputs: dict[str, Any] = field(default_factory=dict)
    simulated: bool = True
    plot_metrics: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def available_policies(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``names`` split into those registered in the gateway's policy registry and the rest."""
    from trunkline.gateway.routing import POLICIES

    found = [name for name in dict.fromkeys(names) if name in POLICIES]
    missing = [name for name in dict.fromkeys(names) if name not in POLICIES]
    return found, missing


def value_of(runs: Runs, variant: str, metric: str) -> float:
    """A metric of a variant, NaN when the variant did not run (so its goal is not met)."""
    return runs.get(variant, {}).get(metric, math.nan)


def ratio_of(runs: Runs, variant: str, baseline: str, metric: str) -> float:
    base = value_of(runs, baseline, metric)
    if not base or math.isnan(base):
        return math.nan
    return value_of(runs, variant, metric) / base


def goal(name: str, target: str, measure: Callable[[Runs], float]) -> GoalSpec:
    return GoalSpec(name, target, measure)


class SimRunner:
    """Runs the fleet simulator, prints progress, and memoises operating-point searches."""

    def __init__(self, progress: TextIO, *, max_search_runs: int = 9) -> None:
        self.progress = progress
        self.max_search_runs = max_search_runs
        self.simulations = 0
        self._points: dict[tuple[tuple[str, str, int, str], float | None], OperatingPoint] = {}
        self._measured: dict[tuple[tuple[str, str, int, str], float], Metrics] = {}
        """Runs by (key, rate): searches of one key under different SLOs share the rates both
        try."""

    def say(self, text: str) -> None:
        print(f"routing: {text}", file=self.progress, flush=True)

    def run(
        self,
        spec: FleetSpec,
        policy_name: str,
        workload: Workload,
        *,
        limit: int | None = None,
        extra: Callable[[Sequence[RequestOutcome]], Metrics] | None = None,
    ) -> Metrics:
        """The run's metrics, plus goodput at the SLO and ``extra`` over its outcomes."""
        from trunkline.fleet import simulate
        from trunkline.gateway.routing import make_policy

        # Millions of short-lived objects and no cycles worth chasing: see bench/fleet.py.
        gc.collect()
        with collector_paused():
            result = simulate(spec, make_policy(policy_name), workload, limit=limit)
        self.simulations += 1
        metrics = result.metrics()
        ttfts = [o.ttft for o in result.outcomes if o.status == "ok"]
        # Per second of arrivals: the drain after the last arrival is not offered load.
        window = max((o.arrival for o in result.outcomes), default=0.0) or result.horizon_s
        metrics["goodput_rps"] = goodput_rps(ttfts, window, SLO_TTFT_P90_S)
        metrics["arrival_window_s"] = window
        if extra is not None:
            metrics.update(extra(result.outcomes))
        return {key: value for key, value in metrics.items() if math.isfinite(value)}

    def operating_point(
        self,
        key: tuple[str, str, int, str],
        build: Callable[[float], tuple[FleetSpec, Workload]],
        start: float,
        *,
        tpot_p90_s: float | None = None,
    ) -> OperatingPoint:
        """The highest rate meeting the SLO for ``key`` = (scenario, profile, replicas, policy):
        p90 TTFT within :data:`SLO_TTFT_P90_S`, and p90 TPOT within ``tpot_p90_s`` if given."""
        if (key, tpot_p90_s) in self._points:
            return self._points[key, tpot_p90_s]
        scenario, profile, replicas, policy = key

        def measure(rate: float) -> Metrics:
            if (key, rate) not in self._measured:
                spec, workload = build(rate)
                self._measured[key, rate] = self.run(spec, policy, workload)
            return self._measured[key, rate]

        point = find_operating_point(
            measure, start, max_runs=self.max_search_runs, tpot_p90_s=tpot_p90_s
        )
        slo = "the SLO" if tpot_p90_s is None else f"the SLO and p90 TPOT <= {tpot_p90_s:g} s"
        self.say(
            f"{scenario} on {replicas} x {profile} under {policy}: highest rate meeting {slo} "
            f"{point.rate:.3g} ({point.runs} runs)"
        )
        self._points[key, tpot_p90_s] = point
        return point
