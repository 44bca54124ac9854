"""The capacity sections of ``trunkline bench routing``: the two-replica scaling ratio, and
heterogeneous placement (the cheapest mix of flavors meeting the SLO vs the best single flavor).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from trunkline.bench._routing_cache import AZURE_FLEET, CARE_FLEET, azure_point, care_point
from trunkline.bench._routing_common import (
    BASELINES,
    RoutingBenchConfig,
    Section,
    SimRunner,
    available_policies,
)
from trunkline.bench._routing_goals import hetero_goals, scaling_goals
from trunkline.bench._routing_search import SLO_TTFT_P90_S, meets_slo
from trunkline.bench.report import Metrics, Runs

if TYPE_CHECKING:
    from trunkline.fleet import FleetSpec, RequestOutcome
    from trunkline.workloads import Workload

__all__ = [
    "HETERO_FLAVORS",
    "HETERO_LONG_PROMPT_TOKENS",
    "by_prompt_class",
    "candidate_fleets",
    "fleet_cost",
    "headroom",
    "hetero_section",
    "mixed_trace",
    "scaling_section",
    "search_fleets",
]

HETERO_FLAVORS = ("h100", "a100", "l40s")
HETERO_MAX_REPLICAS = 12
HETERO_SPEEDUP = 7.0
"""The mixed trace replays at 7 times its own rate: 1,219 requests in 30 s, which takes about
eleven L40S. At 4.5 times (593 requests) four L40S ($4/h) were the best single flavor and every
fleet under $3.6/h was one H100, three L40S or A100-based, all too small: whole replicas left
no room for a mix, whatever the routing."""
HETERO_WINDOW_S = 30.0
HETERO_MAX_MIX_RUNS = 24
HETERO_MIN_CAPACITY = 0.8
"""A mix is tried when it holds 80 % of the capacity the single flavors showed is needed: a
mix can need less than its parts alone (the judged policy sends each replica its share)."""
HETERO_CLASS_SLACK = 0.1
"""A mix may give each class of prompts (long, short) a p90 TTFT up to 10 % above the best single
flavor's (or anything within the SLO), no more."""
HETERO_LONG_PROMPT_TOKENS = 2048
"""Prompts this long or longer form the "long" class whose p90 TTFT is reported apart."""
HETERO_LOADS = (1.05, 1.1, 1.15, 1.2, 1.25, 1.3)
"""Load multipliers (the same requests, arrivals compressed) at which the two fleets shown are
run again: whole replicas make the cost a step function of the load, so a fleet that meets the
SLO with room to spare and one that barely does cost the same. The largest multiplier each
still meets (its *headroom*) gives the cost per unit of load, free of that rounding."""


def scaling_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    policies, missing = available_policies([BASELINES[0], config.policy])
    runs: Runs = {}
    for name in policies:
        metrics: Metrics = {}
        for scenario, point in (("azure", azure_point), ("care", care_point)):
            one = point(config, sim, name, 1)[name]
            two = point(config, sim, name, 2)[name]
            metrics[f"{scenario}_goodput_1_rps"] = one["goodput_rps"]
            metrics[f"{scenario}_goodput_2_rps"] = two["goodput_rps"]
            metrics[f"{scenario}_max_rate_1"] = one["max_rate"]
            metrics[f"{scenario}_max_rate_2"] = two["max_rate"]
            ratio = two["goodput_rps"] / one["goodput_rps"] if one["goodput_rps"] else math.nan
            if math.isfinite(ratio):
                metrics[f"{scenario}_scaling"] = ratio
        runs[name] = metrics
    ours = config.policy
    rows = [
        f"{s}_{m}"
        for s in ("azure", "care")
        for m in ("max_rate_1", "max_rate_2", "goodput_1_rps", "goodput_2_rps", "scaling")
    ]
    return Section(
        name="scaling",
        title="2-replica scaling: goodput at the SLO of two replicas over one",
        runs=runs,
        goals=scaling_goals(ours),
        rows=rows,
        inputs={
            "azure_profile": AZURE_FLEET[0],
            "care_profile": CARE_FLEET[0],
            "care_workload": config.care_spec,
            "azure_window_s": config.azure_window_s,
            "goodput": "requests per second with TTFT <= 1 s, at the highest rate whose "
            "p90 TTFT <= 1 s",
            "missing_policies": missing,
        },
        plot_metrics=["azure_scaling", "care_scaling"],
        notes=[f"policy not registered, not run: {name}" for name in missing],
    )


def fleet_cost(counts: Sequence[tuple[str, int]]) -> float:
    from trunkline.fleet import FLAVOR_PRICES

    return sum(FLAVOR_PRICES[flavor] * n for flavor, n in counts)


def _fleet(counts: Sequence[tuple[str, int]], seed: int) -> FleetSpec:
    from trunkline.fleet import FleetSpec, PoolSpec

    pools = tuple(PoolSpec(f"{flavor}-pool", flavor, n) for flavor, n in counts if n)
    return FleetSpec(pools=pools, seed=seed)


def _describe(counts: Sequence[tuple[str, int]]) -> str:
    return " + ".join(f"{n} x {flavor}" for flavor, n in counts if n) or "none"


def candidate_fleets(
    flavors: Sequence[str], max_replicas: int
) -> list[tuple[tuple[str, int], ...]]:
    """Every fleet of at most ``max_replicas`` per flavor and at least one replica, by cost."""
    fleets = []
    for counts in itertools.product(range(max_replicas + 1), repeat=len(flavors)):
        if any(counts):
            fleets.append(tuple(zip(flavors, counts, strict=True)))
    return sorted(fleets, key=lambda f: (fleet_cost(f), sum(n for _, n in f)))


Fleet = tuple[tuple[str, int], ...]


def search_fleets(
    fleets: Sequence[Fleet],
    check: Callable[[Fleet], bool],
    *,
    max_mix_runs: int = 8,
    min_capacity: float = 0.9,
    as_good_as: Callable[[Fleet, Fleet], bool] | None = None,
) -> tuple[Fleet | None, Fleet | None]:
    """The cheapest single-flavor fleet meeting the SLO, and the cheapest fleet of any mix.

    ``fleets`` come cheapest first. Singles: each flavor's count grows until it meets the SLO.
    Then fleets cheaper than the best single are tried in order, skipping any that (a) is no
    larger than one already seen to miss, or (b) holds under ``min_capacity`` of the capacity
    the singles showed is needed (``n`` replicas of a flavor that needed ``N`` count as
    ``n / N``); at most ``max_mix_runs`` of them are run. A mix that meets the SLO counts only
    if ``as_good_as(mix, best_single)`` (when given). The mix is the best single when nothing
    cheaper meets.
    """
    results: dict[Fleet, bool] = {}

    def run(fleet: Fleet) -> bool:
        if fleet not in results:
            results[fleet] = check(fleet)
        return results[fleet]

    need: dict[str, int] = {}
    largest: dict[str, int] = {}  # per flavor, the most replicas run alone that missed
    cheapest = math.inf
    for fleet in fleets:
        used = [(flavor, n) for flavor, n in fleet if n]
        if len(used) != 1:
            continue
        flavor, n = used[0]
        if flavor in need or fleet_cost(fleet) >= cheapest:
            continue
        if run(fleet):
            need[flavor] = n
            cheapest = min(cheapest, fleet_cost(fleet))
        else:
            largest[flavor] = max(largest.get(flavor, 0), n)
    singles = [f for f in fleets if results.get(f) and sum(1 for _, n in f if n) == 1]
    if not singles:
        return None, None
    best_single = singles[0]
    budget = fleet_cost(best_single)
    mix_runs = 0
    for fleet in fleets:
        if fleet_cost(fleet) >= budget or mix_runs >= max_mix_runs:
            break
        if fleet in results or _dominated(fleet, results):
            continue
        capacity = sum(n / need.get(flavor, largest.get(flavor, 0) + 1) for flavor, n in fleet)
        if capacity < min_capacity:
            continue
        mix_runs += 1
        if run(fleet) and (as_good_as is None or as_good_as(fleet, best_single)):
            return best_single, fleet
    return best_single, best_single


def headroom(meets: Callable[[float], bool], loads: Sequence[float]) -> float:
    """The largest of ``loads`` (ascending, all above 1) up to which every one meets, else 1.0
    (the fleet was chosen because it meets at 1). Stops at the first miss: a later lucky pass
    after a miss is noise, not capacity."""
    best = 1.0
    for load in loads:
        if not meets(load):
            break
        best = load
    return best


def mixed_trace(config: RoutingBenchConfig, load: float = 1.0) -> Workload:
    """The mixed trace; at ``load`` > 1 the same requests arrive ``load`` times as fast."""
    from trunkline.workloads import MixedWorkload, make_workload

    speedup = HETERO_SPEEDUP * load
    window = HETERO_WINDOW_S / load
    parts = tuple(
        make_workload(f"{name}:speedup={speedup}", duration_s=window, data_dir=config.data_dir)
        for name in ("azure-code", "azure-conv")
    )
    return MixedWorkload(parts, name="azure-code+azure-conv")


def hetero_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    policies, missing = available_policies([config.hetero_policy, config.policy, "least-loaded"])
    policy = policies[0]
    workload = mixed_trace(config)
    fleets = candidate_fleets(HETERO_FLAVORS, HETERO_MAX_REPLICAS)
    tried: dict[Fleet, Metrics] = {}
    meets: dict[Fleet, bool] = {}

    def check(fleet: Fleet) -> bool:
        tried[fleet] = sim.run(_fleet(fleet, config.seed), policy, workload, extra=by_prompt_class)
        meets[fleet] = meets_slo(tried[fleet])
        return meets[fleet]

    def as_good_as(mix: Fleet, single: Fleet) -> bool:
        return _no_class_worse(tried[mix], tried[single])

    best_single, best_mix = search_fleets(
        fleets,
        check,
        max_mix_runs=HETERO_MAX_MIX_RUNS,
        min_capacity=HETERO_MIN_CAPACITY,
        as_good_as=as_good_as,
    )
    runs: Runs = {}
    if best_single is not None:
        chosen = best_mix or best_single
        single_at: dict[float, Metrics] = {1.0: tried[best_single]}

        def single_meets(load: float) -> bool:
            single_at[load] = _run_at(sim, config, best_single, policy, load)
            return meets_slo(single_at[load])

        def mix_meets(load: float) -> bool:
            at = _run_at(sim, config, chosen, policy, load)
            if load not in single_at:
                single_at[load] = _run_at(sim, config, best_single, policy, load)
            return meets_slo(at) and _no_class_worse(at, single_at[load])

        single_room = headroom(single_meets, HETERO_LOADS)
        mix_room = single_room if chosen == best_single else headroom(mix_meets, HETERO_LOADS)
        runs["best single flavor"] = _row(tried[best_single], best_single, single_room)
        runs["cheapest mix"] = _row(tried[chosen], chosen, mix_room)
    sim.say(
        f"hetero: best single {_describe(best_single or ())}, "
        f"cheapest mix {_describe(best_mix or best_single or ())}, {len(tried)} fleets run"
    )
    return Section(
        name="hetero",
        title=f"heterogeneous placement on a mixed trace under {policy}",
        runs=runs,
        goals=hetero_goals(),
        rows=[
            "cost_per_hour_usd",
            "load_headroom",
            "cost_per_hour_per_unit_load_usd",
            "replicas",
            "ttft_p90_s",
            "ttft_p90_long_s",
            "ttft_p90_short_s",
            "slo_attainment_ttft",
            "goodput_rps",
            "utilisation",
        ],
        inputs={
            "workload": workload.name,
            "window_s": HETERO_WINDOW_S,
            "speedup": HETERO_SPEEDUP,
            "policy": policy,
            "flavors": {f: fleet_cost(((f, 1),)) for f in HETERO_FLAVORS},
            "max_replicas_per_flavor": HETERO_MAX_REPLICAS,
            "max_mix_runs": HETERO_MAX_MIX_RUNS,
            "min_capacity": HETERO_MIN_CAPACITY,
            "long_prompt_tokens": HETERO_LONG_PROMPT_TOKENS,
            "class_slack": HETERO_CLASS_SLACK,
            "headroom_loads": list(HETERO_LOADS),
            "slo": "p90 TTFT <= 1 s",
            "best_single": _describe(best_single or ()),
            "cheapest_mix": _describe(best_mix or best_single or ()),
            "fleets_tried": {_describe(f): meets[f] for f in tried},
            "missing_policies": missing,
        },
        plot_metrics=["cost_per_hour_usd", "ttft_p90_s"],
        notes=[
            f"best single flavor: {_describe(best_single or ())}; cheapest mix: "
            f"{_describe(best_mix or best_single or ())}",
            *_headroom_note(runs),
        ],
    )


def _run_at(
    sim: SimRunner, config: RoutingBenchConfig, fleet: Fleet, policy: str, load: float
) -> Metrics:
    workload = mixed_trace(config, load)
    return sim.run(_fleet(fleet, config.seed), policy, workload, extra=by_prompt_class)


def _headroom_note(runs: Runs) -> list[str]:
    if len(runs) < 2:
        return []
    single, mix = runs["best single flavor"], runs["cheapest mix"]
    key = "cost_per_hour_per_unit_load_usd"
    return [
        f"per unit of load (cost / headroom, loads tried {', '.join(map(str, HETERO_LOADS))}): "
        f"mix / single = {mix[key] / single[key]:.3f}"
    ]


def by_prompt_class(outcomes: Sequence[RequestOutcome]) -> Metrics:
    """p90 TTFT and SLO attainment of long prompts (at least :data:`HETERO_LONG_PROMPT_TOKENS`)
    and of the rest. Attainment counts every request of the class, refused ones as missed."""
    from trunkline.fleet.results import attainment
    from trunkline.fleet.stats import quantile

    long = [o for o in outcomes if o.prompt_tokens >= HETERO_LONG_PROMPT_TOKENS]
    short = [o for o in outcomes if o.prompt_tokens < HETERO_LONG_PROMPT_TOKENS]
    long_ttfts = sorted(o.ttft for o in long if o.status == "ok")
    short_ttfts = sorted(o.ttft for o in short if o.status == "ok")
    return {
        "ttft_p90_long_s": quantile(long_ttfts, 0.9),
        "ttft_p90_short_s": quantile(short_ttfts, 0.9),
        "slo_attainment_long": attainment(long),
        "slo_attainment_short": attainment(short),
        "long_requests": float(len(long_ttfts)),
    }


def _no_class_worse(mix: Metrics, single: Metrics) -> bool:
    """Neither long nor short prompts get a p90 TTFT more than :data:`HETERO_CLASS_SLACK` worse
    than on the best single flavor (a class already within the SLO may use the rest of it): a
    mix that meets the p90 over all requests by letting the long prompts wait is not counted."""
    return all(
        mix[key] <= max(single[key] * (1.0 + HETERO_CLASS_SLACK), SLO_TTFT_P90_S)
        for key in ("ttft_p90_long_s", "ttft_p90_short_s")
        if not math.isnan(single[key])  # a class the trace does not have
    )


def _dominated(
    fleet: tuple[tuple[str, int], ...], meets: dict[tuple[tuple[str, int], ...], bool]
) -> bool:
    """A fleet no larger than one already seen to miss the SLO misses it too."""
    return any(
        not ok and all(n <= dict(other)[flavor] for flavor, n in fleet)
        for other, ok in meets.items()
    )


def _row(metrics: Metrics, fleet: tuple[tuple[str, int], ...], room: float = 1.0) -> Metrics:
    ttft_ok = metrics.get("goodput_rps", math.nan) * metrics.get("arrival_window_s", math.nan)
    return {
        **metrics,
        "cost_per_hour_usd": fleet_cost(fleet),
        "load_headroom": room,
        "cost_per_hour_per_unit_load_usd": fleet_cost(fleet) / room,
        "replicas": float(sum(n for _, n in fleet)),
        "slo_attainment_ttft": ttft_ok / metrics["requests"] if metrics.get("requests") else 0.0,
    }
