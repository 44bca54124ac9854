"""The ``tiers`` section of ``trunkline bench routing``: placement by tier (pools' ``tiers``).

Not in the default run (it takes about twenty minutes): ``--sections tiers``.

The ``b2b-tiers`` workload (gold 15 % of the requests, silver 30 %, bronze 55 %, each tier's
tenants with their own system prompts) at :data:`TIER_RATE` requests per second. Every tier is
held to its own SLO: gold's TTFT <= 0.5 s and time per output token <= 50 ms, silver's 2 s and
100 ms, bronze's 10 s. Gold's 50 ms is about an L40S's decode step with 64 sequences of 1.5k
tokens (51 ms), so on one shared pool of L40S gold alone decides how many replicas it takes.

The section searches the cheapest fleet of two shapes in which each tier has at least
:data:`~trunkline.bench._routing_placement.PLACEMENT_TARGET` of its requests meeting its SLO:

- *one pool* of one flavor for every tier;
- *by tier*: a pool kept for gold (``tiers: [gold]``) and one for silver and bronze, each of
  either flavor. Kept pools share nothing, so each is sized on its tiers' requests alone
  (:class:`~trunkline.workloads.TierSlice`); the cheapest pair is then run whole to report it.

Each pool's engines run the prefill chunk (vLLM's ``max_num_batched_tokens``: its default, or a
half of it down to 256) with which that pool needs the fewest replicas, as the ``placement``
section sizes them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from trunkline.bench._routing_capacity import fleet_cost
from trunkline.bench._routing_common import (
    RoutingBenchConfig,
    Section,
    SimRunner,
    available_policies,
)
from trunkline.bench._routing_placement import (
    PLACEMENT_FLAVORS,
    PLACEMENT_TARGET,
    fewest,
    tune_chunk,
)
from trunkline.bench.report import Metrics, Runs

if TYPE_CHECKING:
    from trunkline.fleet import FleetSpec, RequestOutcome
    from trunkline.workloads import Workload

__all__ = ["TIER_GROUPS", "TIER_RATE", "by_tier", "ratios", "tiers_section"]

TIER_RATE = 120.0
"""Requests per second: enough that whole replicas do not decide the comparison (four H100 or
22 L40S for one pool). At 40 a gold pool needs half an H100, so two L40S for gold beside one
H100 came out 17 % cheaper than two H100: rounding, not placement."""
TIER_WINDOW_S = 60.0
TIER_GROUPS: tuple[frozenset[str], ...] = (frozenset({"gold"}), frozenset({"silver", "bronze"}))
"""The pools of a by-tier fleet: gold, whose time per output token an L40S meets only at small
batches, and the rest."""
TIERS = ("gold", "silver", "bronze")
MAX_REPLICAS = 48

Pool = tuple[str, int, frozenset[str] | None, int | None]
"""(flavor, replicas, tiers kept for: None for every tier, ``max_num_batched_tokens``: None for
vLLM's default)."""
Shape = tuple[Pool, ...]


def by_tier(outcomes: Sequence[RequestOutcome]) -> Metrics:
    """Each tier's share of requests meeting its SLO (refused ones as missed); NaN if absent."""
    from trunkline.fleet.results import attainment

    return {
        f"slo_attainment_{tier}": attainment(o for o in outcomes if o.tier == tier)
        for tier in TIERS
    }


def tiers_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.engines.profiles import get_profile
    from trunkline.fleet import FLAVOR_PRICES
    from trunkline.workloads import TierSlice, make_workload

    policies, missing = available_policies([config.hetero_policy])
    workload = make_workload(
        f"b2b-tiers:rate={TIER_RATE}", duration_s=TIER_WINDOW_S, seed=config.seed
    )
    runs: Runs = {}
    fleets: dict[str, Shape] = {}
    notes = [f"policy not registered, not run: {name}" for name in missing]
    tried: dict[tuple[Shape, str], Metrics] = {}
    if policies:
        policy = policies[0]

        def run(shape: Shape, part: Workload) -> Metrics:
            key = (shape, part.name)
            if key not in tried:
                tried[key] = sim.run(_fleet(shape, config.seed), policy, part, extra=by_tier)
                sim.say(f"tiers: {_describe(shape)} on {part.name}: {_attained(tried[key])}")
            return tried[key]

        def show(name: str, shape: Shape) -> None:
            runs[name] = _row(run(shape, workload), shape)
            fleets[name] = shape

        def meets(shape: Shape, part: Workload) -> bool:
            metrics = run(shape, part)
            return all(
                metrics[f"slo_attainment_{tier}"] >= PLACEMENT_TARGET
                for tier in set(part.tenants.values())
            )

        def smallest(flavor: str, tiers: frozenset[str] | None, part: Workload) -> Pool | None:
            """The pool of ``flavor`` for ``part`` with the fewest replicas, at the prefill
            chunk that needs fewest (:func:`tune_chunk`, as the placement section sizes)."""

            def with_chunk(chunk: int | None, limit: int) -> int | None:
                return fewest(lambda n: meets(((flavor, n, tiers, chunk),), part), limit=limit)

            tuned = tune_chunk(with_chunk, get_profile(flavor).max_num_batched_tokens)
            return None if tuned is None else (flavor, tuned[1], tiers, tuned[0])

        for flavor in PLACEMENT_FLAVORS:
            alone = smallest(flavor, None, workload)
            if alone is not None:
                show(f"one pool, {flavor}", (alone,))
        sized = {
            (tiers, flavor): smallest(flavor, tiers, TierSlice(workload, tiers))
            for tiers, flavor in itertools.product(TIER_GROUPS, PLACEMENT_FLAVORS)
        }
        pairs: list[Shape] = []  # a pool per group, each group's flavor any way round
        for pick in itertools.product(PLACEMENT_FLAVORS, repeat=len(TIER_GROUPS)):
            pools = [sized[tiers, f] for tiers, f in zip(TIER_GROUPS, pick, strict=True)]
            if all(pool is not None for pool in pools):
                pairs.append(tuple(pool for pool in pools if pool is not None))
        for flavor in PLACEMENT_FLAVORS:
            same = [p for p in pairs if all(pool[0] == flavor for pool in p)]
            if same:
                show(f"by tier, {flavor}", same[0])
        mixed = [p for p in pairs if len({pool[0] for pool in p}) > 1]
        if mixed:
            best = min(mixed, key=lambda p: (_cost(p), sum(pool[1] for pool in p)))
            show("by tier, mixed flavors", best)
        notes += [f"{name}: {_describe(shape)}" for name, shape in fleets.items()]
        notes += ratios(runs)
        sim.say("tiers: " + "; ".join(notes[len(missing) :]) + f" ({len(tried)} runs)")
    return Section(
        name="tiers",
        title="placement by tier, each tier at its own SLO",
        runs=runs,
        goals=[],
        rows=[
            "cost_per_hour_usd",
            "replicas",
            *(f"slo_attainment_{tier}" for tier in TIERS),
            "ttft_p90_s",
            "tpot_p90_s",
            "utilisation",
        ],
        inputs={
            "workload": workload.name,
            "rate_rps": TIER_RATE,
            "window_s": TIER_WINDOW_S,
            "policy": config.hetero_policy,
            "slo": "each request's tier SLO (gold: TTFT <= 0.5 s, TPOT <= 50 ms; silver: 2 s, "
            "100 ms; bronze: 10 s)",
            "target_attainment": PLACEMENT_TARGET,
            "pools_by_tier": [sorted(group) for group in TIER_GROUPS],
            "chunks_tried": "vLLM's default, then each half of it down to 256, per pool",
            "flavors": list(PLACEMENT_FLAVORS),
            "prices": {f: FLAVOR_PRICES[f] for f in PLACEMENT_FLAVORS},
            "runs_tried": {
                f"{_describe(shape)} on {name}": _attained(m) for (shape, name), m in tried.items()
            },
            "missing_policies": missing,
        },
        plot_metrics=["cost_per_hour_usd", "slo_attainment_gold"],
        notes=notes,
    )


def ratios(runs: Runs) -> list[str]:
    """Each flavor's by-tier fleet against its one pool, and the mix against the cheapest
    single-flavor fleet (placed or not)."""
    cost = {name: metrics["cost_per_hour_usd"] for name, metrics in runs.items()}
    lines = [
        f"by tier / one pool on {f}: {cost[f'by tier, {f}'] / cost[f'one pool, {f}']:.3f}"
        for f in PLACEMENT_FLAVORS
        if f"by tier, {f}" in cost and f"one pool, {f}" in cost
    ]
    singles = [c for name, c in cost.items() if name != "by tier, mixed flavors"]
    if "by tier, mixed flavors" in cost and singles:
        lines.append(
            f"mixed / cheapest single flavor: {cost['by tier, mixed flavors'] / min(singles):.3f}"
        )
    return lines


def _attained(metrics: Metrics) -> str:
    return ", ".join(
        f"{tier} {metrics.get(f'slo_attainment_{tier}', math.nan):.3f}" for tier in TIERS
    )


def _cost(shape: Shape) -> float:
    return fleet_cost([(pool[0], pool[1]) for pool in shape])


def _fleet(shape: Shape, seed: int) -> FleetSpec:
    from trunkline.fleet import FleetSpec, PoolSpec

    pools = tuple(
        PoolSpec(
            f"{flavor}-{'+'.join(sorted(tiers)) if tiers else 'all'}",
            flavor,
            n,
            tiers=None if tiers is None else tuple(sorted(tiers)),
            max_num_batched_tokens=chunk,
        )
        for flavor, n, tiers, chunk in shape
    )
    return FleetSpec(pools=pools, seed=seed)


def _describe(shape: Shape) -> str:
    return " + ".join(
        f"{n} x {flavor}"
        + (f" (chunk {chunk})" if chunk else "")
        + (f" ({'+'.join(sorted(tiers))})" if tiers else "")
        for flavor, n, tiers, chunk in shape
    )


def _row(metrics: Metrics, shape: Shape) -> Metrics:
    return {
        **metrics,
        "cost_per_hour_usd": _cost(shape),
        "replicas": float(sum(pool[1] for pool in shape)),
    }
