"""``trunkline bench admission``: SLO admission per tier against FIFO, on a simulated fleet.

The ``b2b-tiers`` workload (gold 15 %, silver 30 %, bronze 55 % of the traffic, equal tenants in
each tier, per-tenant bursts) runs on N simulated engines in virtual time. The fleet's capacity is
measured first (saturated, without admission); then each offered load (1x, 1.5x, 2x, 3x of it)
runs twice in the same invocation — first come, first served with no admission (the baseline,
``fifo``) and through the gateway's :class:`~trunkline.gateway.admission.AdmissionPolicy`
(``admission``). A run at a quarter of capacity gives gold's unloaded TTFT, and runs at 0.75x
where one silver tenant sends 10x its share show what a noisy tenant does to its tier-mates.

``runs`` holds one flat metric set per variant with the load in the key (``gold_ttft_p99_s@2x``);
``ratios`` are admission / FIFO; the goals of issue 5 are measured on the admission run. The
fleet has a burst pool only gold may use (paid only while it serves); the 2x admission run is
repeated without it. The decision time is reported in the run (wall clock and CPU time of each
``decide`` call) and from a tight-loop replay of the 2x run's calls (the code's own latency, the
figure the goal is judged on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from trunkline.bench.report import BenchResult, GoalSpec, Runs, write_result

__all__ = ["AdmissionBenchConfig", "run_admission_bench"]

NO_BURST_METRICS = (
    "gold_ttft_attainment",
    "gold_ttft_p99_s",
    "silver_ttft_attainment",
    "goodput_over_capacity",
)
"""What the 2x admission run without the burst pool reports, to show what the pool changes."""

NOISY_TENANT = "silver-00"
NOISY_LOAD = 0.75
"""Base load of the noisy-tenant runs: the tenant's 10x share (+45 % of the traffic) takes the
fleet from below its capacity to just above it."""


@dataclass(frozen=True, slots=True)
class AdmissionBenchConfig:
    profile: str = "l40s"
    replicas: int = 2
    duration_s: float = 60.0
    seed: int = 1
    loads: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0)
    probe_rate: float | None = None
    """Offered rate of the capacity run (default: far above what the fleet can serve)."""
    burst_replicas: int = 1
    """A burst pool for gold beside the shared pool (0: none). Capacity is the shared pool's."""

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.duration_s <= 0:
            raise ValueError("--replicas must be >= 1 and --duration > 0")
        if self.burst_replicas < 0:
            raise ValueError("--burst-replicas must be >= 0")
        if 2.0 not in self.loads:
            raise ValueError("the loads must include 2 (the goals are measured at 2x)")


def _key(metric: str, load: float) -> str:
    return f"{metric}@{load:g}x"


def run_admission_bench(
    config: AdmissionBenchConfig, out_dir: Path, *, progress: TextIO | None = None
) -> BenchResult:
    from trunkline.bench._admission_plot import plot_admission
    from trunkline.bench._admission_runs import (
        Scenario,
        measure_capacity,
        others_attainment,
        others_p90,
        run_variant,
    )
    from trunkline.engines import get_profile

    say = _say(progress)
    scenario = Scenario(
        config.profile,
        config.replicas,
        config.duration_s,
        config.seed,
        burst_replicas=config.burst_replicas,
    )
    profile = get_profile(config.profile)
    probe = config.probe_rate or 20.0 * config.replicas * profile.max_num_seqs / 256
    say(f"admission: measuring capacity ({probe:.0f} req/s offered) ...")
    capacity = measure_capacity(scenario, probe)
    say(f"admission: capacity {capacity:.2f} req/s")
    runs: Runs = {"fifo": {"capacity_rps": capacity}, "admission": {"capacity_rps": capacity}}
    details: dict[str, Any] = {"capacity_rps": capacity, "loads": {}}
    for load in (0.25, *config.loads):
        for name, admission in (("fifo", False), ("admission", True)):
            say(f"admission: {load:g}x under {name} ...")
            replay = admission and load == 2.0
            metrics, result = run_variant(
                scenario, capacity * load, admission, capacity, replay=replay
            )
            runs[name].update({_key(k, load): v for k, v in metrics.items()})
            details["loads"].setdefault(f"{load:g}x", {})[name] = {
                "tiers": result.attainment_by("tier", ttft_only=True),
                "tenants": result.attainment_by("tenant", ttft_only=True),
            }
    if config.burst_replicas:
        say("admission: 2x under admission without the burst pool ...")
        metrics, _ = run_variant(scenario.without_burst(), capacity * 2, True, capacity)
        for metric in NO_BURST_METRICS:
            runs["admission"][f"{metric}@2x_no_burst"] = metrics[metric]
        runs["admission"]["gold_p99_over_unloaded@2x_no_burst"] = (
            metrics["gold_ttft_p99_s"] / runs["admission"]["gold_ttft_p99_s@0.25x"]
        )
    tenants = scenario.workload(capacity).tenants
    for name, admission in (("fifo", False), ("admission", True)):
        say(f"admission: {NOISY_TENANT} at 10x its share under {name} ...")
        quiet = scenario.run(capacity * NOISY_LOAD, admission)
        noisy = scenario.run(capacity * NOISY_LOAD, admission, NOISY_TENANT)
        before, after = (
            others_p90(quiet, tenants, NOISY_TENANT),
            others_p90(noisy, tenants, NOISY_TENANT),
        )
        runs[name]["noisy_others_p90_before_s"] = before
        runs[name]["noisy_others_p90_after_s"] = after
        runs[name]["noisy_others_p90_change"] = abs(after - before) / before
        runs[name]["noisy_others_attainment_before"] = others_attainment(
            quiet, tenants, NOISY_TENANT
        )
        runs[name]["noisy_others_attainment_after"] = others_attainment(
            noisy, tenants, NOISY_TENANT
        )
        for label, result in (("before", quiet), ("after", noisy)):
            rest = [o for o in result.outcomes if o.tenant != NOISY_TENANT]
            runs[name][f"noisy_everyone_else_attainment_{label}"] = sum(
                o.ttft_met for o in rest
            ) / len(rest)
        own = [o for o in noisy.outcomes if o.tenant == NOISY_TENANT]
        runs[name]["noisy_tenant_attainment"] = sum(o.ttft_met for o in own) / len(own)
    for run in runs.values():
        run["gold_p99_over_unloaded@2x"] = run["gold_ttft_p99_s@2x"] / run["gold_ttft_p99_s@0.25x"]
    inputs = {
        "workload": "b2b-tiers (gold 15 %, silver 30 %, bronze 55 % of requests)",
        "fleet": f"{config.replicas} x {config.profile} (simulated, virtual time)"
        + (f" + a {config.burst_replicas}-replica burst pool" if config.burst_replicas else ""),
        "loads": [1.0 * x for x in config.loads],
        "duration_s": config.duration_s,
        "seed": config.seed,
        "capacity_probe_rps": probe,
        "noisy_tenant": f"{NOISY_TENANT} x10 on a {NOISY_LOAD:g}x load",
        "slo": "TTFT objective of each tier (gold 500 ms, silver 2 s, bronze 10 s)",
        "decision_time": (
            "AdmissionPolicy.decide in the run: wall clock and CPU time; and the fastest wall "
            "time of each decision over 3 tight-loop replays of the 2x run (the goal's figure)"
        ),
    }
    bench = BenchResult.build(
        "admission", simulated=True, inputs=inputs, runs=_finite(runs), goals=_goals()
    )
    write_result(out_dir, bench)
    (out_dir / "detail.json").write_text(json.dumps(details, indent=2) + "\n")
    burst = f" + {config.burst_replicas} burst" if config.burst_replicas else ""
    title = f"b2b-tiers on {config.replicas} x {config.profile}{burst} (simulated)"
    plot_admission(bench.runs, (0.25, *config.loads), out_dir / "admission.png", title=title)
    return bench


def _finite(runs: Runs) -> Runs:
    return {n: {k: v for k, v in m.items() if math.isfinite(v)} for n, m in runs.items()}


def _goals() -> list[GoalSpec]:
    def ours(metric: str) -> Callable[[Runs], float]:
        return lambda runs: runs["admission"].get(metric, float("nan"))

    def worst_jain(runs: Runs) -> float:
        values = [
            runs["admission"].get(f"{t}_jain@2x", float("nan"))
            for t in ("gold", "silver", "bronze")
        ]
        return min(values)

    return [
        GoalSpec("gold within TTFT SLO at 2x", ">= 0.99", ours("gold_ttft_attainment@2x")),
        GoalSpec("gold p99 TTFT at 2x / unloaded", "<= 1.5", ours("gold_p99_over_unloaded@2x")),
        GoalSpec("silver within TTFT SLO at 2x", ">= 0.9", ours("silver_ttft_attainment@2x")),
        GoalSpec(
            "reject decision p99 at 2x, tight-loop replay (ms)",
            "< 5",
            ours("reject_decision_replay_p99_ms@2x"),
        ),
        GoalSpec(
            "bronze time to rejection p99 at 2x (s)",
            "< 0.005",
            ours("bronze_time_to_reject_p99_s@2x"),
        ),
        GoalSpec("goodput at 2x / capacity", ">= 0.9", ours("goodput_over_capacity@2x")),
        GoalSpec("Jain fairness in a tier at 2x (worst tier)", ">= 0.95", worst_jain),
        GoalSpec(
            "noisy tenant (10x): tier-mates' p90 TTFT change",
            "< 0.2",
            ours("noisy_others_p90_change"),
        ),
    ]


def _say(progress: TextIO | None) -> Callable[[str], None]:
    def say(message: str) -> None:
        if progress is not None:
            print(message, file=progress, flush=True)

    return say


def table_rows(runs: Runs, loads: Sequence[float]) -> list[str]:
    """The rows worth printing, load by load."""
    per_load = [
        "offered_rps", "gold_ttft_attainment", "silver_ttft_attainment", "bronze_ttft_attainment",
        "gold_ttft_p99_s", "silver_ttft_p90_s", "bronze_ttft_p90_s", "goodput_over_capacity",
        "decisions_queued", "rejected_overloaded", "rejected_slo_unattainable",
        "rejected_deadline_exceeded", "rejected_at_once_share", "reject_decision_p99_ms",
        "reject_decision_cpu_p99_ms", "reject_decision_replay_p99_ms", "decision_replay_p99_ms",
        "shared_cost_usd", "burst_cost_usd", "burst_cost_share", "gold_on_burst_share",
        "silver_on_burst_share", "bronze_on_burst_share",
        "bronze_time_to_reject_p99_s", "gold_jain", "silver_jain",
        "bronze_jain",
    ]  # fmt: skip
    keys = ["capacity_rps"] + [_key(m, load) for load in (0.25, *loads) for m in per_load]
    keys += [f"{m}@2x_no_burst" for m in NO_BURST_METRICS]
    keys += ["gold_p99_over_unloaded@2x_no_burst"]
    keys += ["gold_p99_over_unloaded@2x", "noisy_others_p90_before_s", "noisy_others_p90_after_s",
             "noisy_others_p90_change", "noisy_others_attainment_before",
             "noisy_others_attainment_after", "noisy_everyone_else_attainment_before",
             "noisy_everyone_else_attainment_after", "noisy_tenant_attainment"]  # fmt: skip
    present = set(runs["fifo"]) | set(runs["admission"])
    return [key for key in keys if key in present]
