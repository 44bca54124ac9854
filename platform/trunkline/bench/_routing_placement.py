"""The ``placement`` section of ``trunkline bench routing``: placement by prompt length under the
trace's own tier SLO.

The ``hetero`` section judges fleets by p90 TTFT alone. The mixed trace's requests are silver
tier, whose SLO also bounds the time per output token (TTFT <= 2 s and TPOT <= 100 ms per
request), and there long prompts hurt twice: their prefill chunks share engine steps with other
requests' decoding. So this section searches, for a share of requests meeting their tier's SLO
of at least :data:`PLACEMENT_TARGET`, the cheapest fleet of three shapes:

- *one pool* of one flavor (each of ``HETERO_FLAVORS``);
- *placed, one flavor*: a pool for prompts of at least :data:`HETERO_LONG_PROMPT_TOKENS` tokens
  and one for the rest (pools' ``min_prompt_tokens`` / ``max_prompt_tokens``, the
  ``prompt-length`` routing filter), both of one flavor;
- *placed, mixed flavors*: the same with a different flavor for each class.

The issue's heterogeneous-placement goal is then measured fairly: the mix against the cheapest
single-flavor fleet, placed or not.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

from trunkline.bench._routing_capacity import (
    HETERO_FLAVORS,
    HETERO_LONG_PROMPT_TOKENS,
    by_prompt_class,
    fleet_cost,
    mixed_trace,
)
from trunkline.bench._routing_common import (
    RoutingBenchConfig,
    Section,
    SimRunner,
    available_policies,
)
from trunkline.bench._routing_goals import placement_goals
from trunkline.bench.report import Metrics, Runs

if TYPE_CHECKING:
    from trunkline.fleet import FleetSpec, PoolSpec

__all__ = ["PLACEMENT_TARGET", "cheapest_placement", "fewest", "placement_section"]

PLACEMENT_TARGET = 0.95
"""Share of all requests that must meet their tier's SLO (rejected ones count as missed)."""
PLACEMENT_FLAVORS = ("h100", "l40s")
"""Flavors tried for each class. The A100 is left out: alone it needs 15 replicas ($27/h) where
16 L40S ($16/h) do, and it is neither the cheapest prefill nor the cheapest decode."""
MAX_REPLICAS = 64

Shape = tuple[tuple[str, int], ...]
"""((long flavor, replicas), (short flavor, replicas)), or ((flavor, replicas),) for one pool."""


def fewest(meets: Callable[[int], bool], *, limit: int = MAX_REPLICAS) -> int | None:
    """The fewest replicas ``n`` in 1..``limit`` for which ``meets(n)``, taking more replicas
    never to hurt: doubles from 1 until it meets, then bisects. None when ``limit`` does not."""
    low, high = 0, 1  # low: known to miss (0 replicas always does); high: to try
    while not meets(high):
        if high >= limit:
            return None
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high


def cheapest_placement(
    meets: Callable[[int, int], bool],
    *,
    long_price: float,
    short_price: float,
    long_limit: int,
    short_limit: int,
) -> tuple[int, int] | None:
    """The cheapest (long replicas, short replicas) meeting the SLO: for each size of the long
    pool, the fewest short replicas (:func:`fewest`); stops once the long pool alone (plus one
    short replica) costs as much as the best found."""
    best: tuple[float, int, int] | None = None
    for long in range(1, long_limit + 1):
        if best is not None and long * long_price + short_price >= best[0]:
            break
        short = fewest(functools.partial(meets, long), limit=short_limit)
        if short is None:
            continue
        cost = long * long_price + short * short_price
        if best is None or cost < best[0]:
            best = (cost, long, short)
    return None if best is None else (best[1], best[2])


def placement_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.fleet import FLAVOR_PRICES

    policies, missing = available_policies([config.hetero_policy])
    workload = mixed_trace(config)
    runs: Runs = {}
    notes = [f"policy not registered, not run: {name}" for name in missing]
    tried: dict[Shape, Metrics] = {}
    if policies:
        policy = policies[0]

        def run(shape: Shape) -> Metrics:
            if shape not in tried:
                fleet = _fleet(shape, config.seed)
                tried[shape] = sim.run(fleet, policy, workload, extra=by_prompt_class)
                attained = tried[shape].get("slo_attainment", 0.0)
                sim.say(f"placement: {_describe(shape)}: SLO attainment {attained:.3f}")
            return tried[shape]

        def meets(shape: Shape) -> bool:
            return run(shape).get("slo_attainment", 0.0) >= PLACEMENT_TARGET

        def alone(flavor: str) -> Callable[[int], bool]:
            return lambda n: meets(((flavor, n),))

        def split(long: str, short: str) -> Callable[[int, int], bool]:
            return lambda a, b: meets(((long, a), (short, b)))

        singles: dict[str, int] = {}
        for flavor in HETERO_FLAVORS:
            count = fewest(alone(flavor))
            if count is not None:
                singles[flavor] = count
        placed: dict[tuple[str, str], tuple[int, int]] = {}
        for long, short in itertools.product(PLACEMENT_FLAVORS, repeat=2):
            found = cheapest_placement(
                split(long, short),
                long_price=FLAVOR_PRICES[long],
                short_price=FLAVOR_PRICES[short],
                long_limit=singles.get(long, MAX_REPLICAS),
                short_limit=singles.get(short, MAX_REPLICAS),
            )
            if found is not None:
                placed[long, short] = found
        candidates: dict[str, list[Shape]] = {
            "one pool": [((f, n),) for f, n in singles.items()],
            "placed, one flavor": [
                ((lf, a), (sf, b)) for (lf, sf), (a, b) in placed.items() if lf == sf
            ],
            "placed, mixed flavors": [
                ((lf, a), (sf, b)) for (lf, sf), (a, b) in placed.items() if lf != sf
            ],
        }
        for name, shapes in candidates.items():
            if shapes:
                best = min(shapes, key=lambda s: (fleet_cost(s), sum(n for _, n in s)))
                runs[name] = _row(tried[best], best)
                notes.append(f"{name}: {_describe(best)}")
        sim.say("placement: " + "; ".join(notes[len(missing) :]) + f" ({len(tried)} fleets run)")
    return Section(
        name="placement",
        title="placement by prompt length, at the tier SLO",
        runs=runs,
        goals=placement_goals(),
        rows=[
            "cost_per_hour_usd",
            "replicas",
            "slo_attainment",
            "ttft_p90_s",
            "tpot_p90_s",
            "ttft_p90_long_s",
            "ttft_p90_short_s",
            "utilisation",
        ],
        inputs={
            "workload": workload.name,
            "policy": config.hetero_policy,
            "slo": "each request's tier SLO (silver: TTFT <= 2 s and TPOT <= 100 ms)",
            "target_attainment": PLACEMENT_TARGET,
            "long_prompt_tokens": HETERO_LONG_PROMPT_TOKENS,
            "flavors_alone": list(HETERO_FLAVORS),
            "flavors_placed": list(PLACEMENT_FLAVORS),
            "prices": {f: FLAVOR_PRICES[f] for f in HETERO_FLAVORS},
            "fleets_tried": {_describe(s): m.get("slo_attainment", 0.0) for s, m in tried.items()},
            "missing_policies": missing,
        },
        plot_metrics=["cost_per_hour_usd", "slo_attainment"],
        notes=notes,
    )


def _fleet(shape: Shape, seed: int) -> FleetSpec:
    from trunkline.fleet import FleetSpec

    return FleetSpec(pools=_pools(shape), seed=seed)


def _pools(shape: Shape) -> tuple[PoolSpec, ...]:
    from trunkline.fleet import PoolSpec

    if len(shape) == 1:
        ((flavor, n),) = shape
        return (PoolSpec(f"{flavor}-pool", flavor, n),)
    (long, a), (short, b) = shape
    return (
        PoolSpec(f"long-{long}", long, a, min_prompt_tokens=HETERO_LONG_PROMPT_TOKENS),
        PoolSpec(f"short-{short}", short, b, max_prompt_tokens=HETERO_LONG_PROMPT_TOKENS),
    )


def _describe(shape: Shape) -> str:
    if len(shape) == 1:
        return f"{shape[0][1]} x {shape[0][0]}"
    (long, a), (short, b) = shape
    return f"{a} x {long} (long prompts) + {b} x {short} (short)"


def _row(metrics: Metrics, shape: Shape) -> Metrics:
    return {
        **metrics,
        "cost_per_hour_usd": fleet_cost(shape),
        "replicas": float(sum(n for _, n in shape)),
    }
