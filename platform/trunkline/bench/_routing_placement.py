"""The ``placement`` section of ``trunkline bench routing``: placement by prompt length under the
trace's own tier SLO.

The ``hetero`` section judges fleets by p90 TTFT alone. The mixed trace's requests are silver
tier, whose SLO also bounds the time per output token (TTFT <= 2 s and TPOT <= 100 ms per
request), and there long prompts hurt twice: their prefill chunks share engine steps with other
requests' decoding. So this section searches the cheapest fleet of three shapes in which each
prompt class, long and short, has a share of at least :data:`PLACEMENT_TARGET` of its requests
meeting their tier's SLO:

- *one pool* of one flavor (each of ``HETERO_FLAVORS``);
- *placed, one flavor*: a pool for prompts of at least :data:`HETERO_LONG_PROMPT_TOKENS` tokens
  and one for the rest (pools' ``min_prompt_tokens`` / ``max_prompt_tokens``, the
  ``prompt-length`` routing filter), both of one flavor;
- *placed, mixed flavors*: the same with a different flavor for each class;
- *prefill/decode, mixed flavors*: prefill and decoding disaggregated (pool ``role``), a pool
  of L40S prefilling every prompt of which the serving engine lacks at least
  :data:`PD_PREFILL_MIN_TOKENS` tokens and handing its KV to a pool of H200 or H100 that
  decodes (and prefills the shorter prompts itself). A simulator what-if: the gateway does not
  route prefill/decode pairs yet.

Each flavor's engines run with the prefill chunk (vLLM's ``max_num_batched_tokens``) with which
one pool of it needs the fewest replicas (:func:`tune_chunk`), as an operator would deploy it:
a step with a full chunk must stay under the tier's time per output token. One pool with vLLM's
default chunk is kept as the first run, to show what that tuning is worth.

The issue's heterogeneous-placement goal is then measured fairly: the mix against the cheapest
single-flavor fleet, placed or not.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

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
from trunkline.bench._routing_goals import DEFAULT_CHUNK_RUN, PD_RUN, placement_goals
from trunkline.bench._routing_ideal import ideal_bounds, ideal_mix_ratio, work_costs
from trunkline.bench.report import Metrics, Runs

if TYPE_CHECKING:
    from trunkline.fleet import FleetSpec, PoolSpec

__all__ = [
    "PLACEMENT_TARGET",
    "Engine",
    "cheapest_placement",
    "fewest",
    "placement_section",
    "tune_chunk",
]

PLACEMENT_TARGET = 0.95
"""Share of each prompt class's requests (long, short) that must meet their tier's SLO, rejected
ones counted as missed. Over all requests together, a fleet could meet it by failing a third of
the long prompts (15 % of the trace) and serving nearly every short one: the first version of
this section did, and found placement 12 % cheaper; each class at its own target, it is not."""
PLACEMENT_FLAVORS = ("h100", "l40s")
"""Flavors tried for each class. The A100 is left out: alone it needs 10 replicas ($18/h) where
12 L40S or 4 H100 ($12/h) do, and it is neither the cheapest prefill nor the cheapest decode."""
PD_PREFILL_FLAVOR = "l40s"
"""The cheapest prefill per dollar of the priced presets the bench runs (not Gaudi 3)."""
PD_DECODE_FLAVORS = ("h200", "h100")
"""The cheapest decoding per dollar of those presets."""
PD_PREFILL_MIN_TOKENS = 1024
"""Prompts the serving engine lacks fewer tokens of are prefilled there: moving their KV costs
more than it saves. Of 256, 512 and 1,024 tried on this trace, 1,024 kept the most long
prompts within the SLO for the same fleet."""
PD_MAX_DECODE = 3
MAX_REPLICAS = 64
MIN_CHUNK = 256
"""The smallest ``max_num_batched_tokens`` tried when sizing a flavor's prefill chunk."""


class Engine(NamedTuple):
    """A flavor, the ``max_num_batched_tokens`` its engines run with (None: vLLM's default) and
    the phases they run (a pool ``role``)."""

    flavor: str
    chunk: int | None = None
    role: str = "both"

    def __str__(self) -> str:
        name = self.flavor if self.chunk is None else f"{self.flavor} (chunk {self.chunk})"
        return name if self.role == "both" else f"{name} {self.role}"


Shape = tuple[tuple[Engine, int], ...]
"""((long engine, replicas), (short engine, replicas)), ((prefill engine, replicas), (decode
engine, replicas)), or ((engine, replicas),) for one pool."""


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
    meets: Callable[[int, int], tuple[bool, bool]],
    *,
    long_limit: int,
    short_limit: int,
) -> tuple[int, int] | None:
    """The fewest (long replicas, short replicas) with which both prompt classes meet the SLO.

    ``meets(long, short)`` says whether the long class and the short class meet it. Each class
    has its own pool, so each is sized on its own, the other pool at its limit (:func:`fewest`);
    then together, and a class missing there gets one more replica until both meet. None when a
    class misses at its limit. Fewest replicas is cheapest: each pool has one flavor."""
    long = fewest(lambda n: meets(n, short_limit)[0], limit=long_limit)
    short = fewest(lambda n: meets(long_limit, n)[1], limit=short_limit)
    while long is not None and short is not None:
        long_met, short_met = meets(long, short)
        if long_met and short_met:
            return long, short
        long = long if long_met else (long + 1 if long < long_limit else None)
        short = short if short_met else (short + 1 if short < short_limit else None)
    return None


def tune_chunk(
    fewest_with: Callable[[int | None, int], int | None], default_chunk: int
) -> tuple[int | None, int] | None:
    """The prefill chunk (``max_num_batched_tokens``) one pool of a flavor needs the fewest
    replicas with, and how many: vLLM's default (None), then each half of it down to
    :data:`MIN_CHUNK`; of chunks needing as many, the larger (prefills stay fast).

    ``fewest_with(chunk, limit)`` is the fewest replicas meeting the SLO with that chunk, at most
    ``limit`` (None: not within it). None when no chunk tried meets it within the limit."""
    chosen, best = None, fewest_with(None, MAX_REPLICAS)
    chunk = default_chunk // 2
    while chunk >= MIN_CHUNK and best != 1:
        fewer = fewest_with(chunk, MAX_REPLICAS if best is None else best - 1)
        if fewer is not None:
            chosen, best = chunk, fewer
        chunk //= 2
    return None if best is None else (chosen, best)


def placement_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    from trunkline.engines.profiles import get_profile
    from trunkline.fleet import FLAVOR_PRICES

    policies, missing = available_policies([config.hetero_policy])
    workload = mixed_trace(config)
    runs: Runs = {}
    notes = [f"policy not registered, not run: {name}" for name in missing]
    ideal = work_costs(workload, PLACEMENT_FLAVORS)
    bounds = ideal_bounds(workload)
    tried: dict[Shape, Metrics] = {}
    engines: dict[str, Engine] = {}
    if policies:
        policy = policies[0]

        def run(shape: Shape) -> Metrics:
            if shape not in tried:
                fleet = _fleet(shape, config.seed)
                tried[shape] = sim.run(fleet, policy, workload, extra=by_prompt_class)
                sim.say(f"placement: {_describe(shape)}: SLO attainment {_attained(tried[shape])}")
            return tried[shape]

        def meets(shape: Shape) -> tuple[bool, bool]:
            """Whether the long prompts and the short ones each meet the target."""
            metrics = run(shape)
            return (
                _class_meets(metrics, "slo_attainment_long"),
                _class_meets(metrics, "slo_attainment_short"),
            )

        def alone(engine: Engine) -> Callable[[int], bool]:
            return lambda n: all(meets(((engine, n),)))

        def one_pool_of(flavor: str) -> Callable[[int | None, int], int | None]:
            return lambda chunk, limit: fewest(alone(Engine(flavor, chunk)), limit=limit)

        def split(long: Engine, short: Engine) -> Callable[[int, int], tuple[bool, bool]]:
            return lambda a, b: meets(((long, a), (short, b)))

        defaults: dict[str, int] = {}
        singles: dict[str, int] = {}
        for flavor in HETERO_FLAVORS:
            count = fewest(alone(Engine(flavor)))
            if count is not None:
                defaults[flavor] = count
            tuned = tune_chunk(one_pool_of(flavor), get_profile(flavor).max_num_batched_tokens)
            if tuned is not None:
                engines[flavor] = Engine(flavor, tuned[0])
                singles[flavor] = tuned[1]
        placed: dict[tuple[Engine, Engine], tuple[int, int]] = {}
        for long, short in itertools.product(PLACEMENT_FLAVORS, repeat=2):
            if long in engines and short in engines:
                pair = engines[long], engines[short]
                found = cheapest_placement(
                    split(*pair), long_limit=singles[long], short_limit=singles[short]
                )
                if found is not None:
                    placed[pair] = found
        disaggregated: list[Shape] = []
        budget = min((_cost(((engines[f], n),)) for f, n in singles.items()), default=math.inf)
        for flavor in PD_DECODE_FLAVORS:
            pd = _cheapest_disaggregated(
                lambda shape: all(meets(shape)), Engine(flavor, role="decode"), budget
            )
            if pd is not None:
                disaggregated.append(pd)
            else:
                notes.append(
                    f"{PD_RUN}: no {PD_PREFILL_FLAVOR} prefill + {flavor} decode fleet under "
                    f"${budget:g}/h (the cheapest single flavor) meets the SLO"
                )
        candidates: dict[str, list[Shape]] = {
            DEFAULT_CHUNK_RUN: [((Engine(f), n),) for f, n in defaults.items()],
            "one pool": [((engines[f], n),) for f, n in singles.items()],
            "placed, one flavor": [
                ((le, a), (se, b)) for (le, se), (a, b) in placed.items() if le == se
            ],
            "placed, mixed flavors": [
                ((le, a), (se, b)) for (le, se), (a, b) in placed.items() if le != se
            ],
            PD_RUN: disaggregated,
        }
        for name, shapes in candidates.items():
            if shapes:
                best = min(shapes, key=lambda s: (_cost(s), sum(n for _, n in s)))
                runs[name] = _row(tried[best], best)
                notes.append(f"{name}: {_describe(best)}")
        notes.append(
            "ideal mix / cheapest flavor, each prompt class's work at the profiles' rates per "
            f"dollar (no SLO, fractional replicas): {ideal_mix_ratio(ideal):.3f}"
        )
        notes.extend(bounds.notes)
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
            "slo_attainment_long",
            "slo_attainment_short",
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
            "prefill_decode": {
                "prefill_flavor": PD_PREFILL_FLAVOR,
                "decode_flavors": list(PD_DECODE_FLAVORS),
                "prefill_min_uncached_tokens": PD_PREFILL_MIN_TOKENS,
                "kv_link_bytes_per_s": _fleet(((Engine("h100"), 1),), 0).kv_transfer_bytes_per_s,
                "simulated_only": "the gateway does not route prefill/decode pairs",
            },
            "prices": {f: FLAVOR_PRICES[f] for f in HETERO_FLAVORS},
            "chunks_tried": f"vLLM's default, then each half of it down to {MIN_CHUNK}",
            "chunk_per_flavor": {f: e.chunk for f, e in engines.items()},
            "work_cost_usd": {
                c: {f: round(v, 4) for f, v in by.items()} for c, by in ideal.items()
            },
            "ideal_mix_ratio": ideal_mix_ratio(ideal),
            "ideal_bounds_every_preset": bounds.inputs,
            "fleets_tried": {_describe(s): _attained(m) for s, m in tried.items()},
            "missing_policies": missing,
        },
        plot_metrics=["cost_per_hour_usd", "slo_attainment"],
        notes=notes,
    )


def _cheapest_disaggregated(
    meets: Callable[[Shape], bool], decode: Engine, budget: float
) -> Shape | None:
    """The cheapest fleet of :data:`PD_PREFILL_FLAVOR` prefill engines and 1 to
    :data:`PD_MAX_DECODE` ``decode`` engines meeting the SLO, cheaper than ``budget`` (the
    cheapest single flavor: a dearer fleet is not worth its runs); None when none is."""
    prefill = Engine(PD_PREFILL_FLAVOR, role="prefill")
    best: Shape | None = None
    for m in range(1, PD_MAX_DECODE + 1):
        decoders = _cost(((decode, m),))
        limit = math.floor((budget - decoders) / _cost(((prefill, 1),)))
        if limit < 1:
            break
        n = fewest(functools.partial(_meets_with, meets, prefill, decode, m), limit=limit)
        if n is not None:
            shape = ((prefill, n), (decode, m))
            if best is None or _cost(shape) < _cost(best):
                best = shape
                budget = _cost(shape)
    return best


def _meets_with(
    meets: Callable[[Shape], bool], prefill: Engine, decode: Engine, decoders: int, n: int
) -> bool:
    return meets(((prefill, n), (decode, decoders)))


def _attained(metrics: Metrics) -> str:
    long, short, both = (
        metrics.get(key, math.nan)
        for key in ("slo_attainment_long", "slo_attainment_short", "slo_attainment")
    )
    return f"long {long:.3f}, short {short:.3f}, all {both:.3f}"


def _class_meets(metrics: Metrics, key: str) -> bool:
    """A class the trace does not have (NaN) meets the target."""
    attained = metrics.get(key, 0.0)
    return math.isnan(attained) or attained >= PLACEMENT_TARGET


def _cost(shape: Shape) -> float:
    return fleet_cost([(engine.flavor, n) for engine, n in shape])


def _fleet(shape: Shape, seed: int) -> FleetSpec:
    from trunkline.fleet import FleetSpec

    return FleetSpec(pools=_pools(shape), seed=seed)


def _pools(shape: Shape) -> tuple[PoolSpec, ...]:
    from trunkline.fleet import PoolSpec

    if len(shape) == 1:
        ((engine, n),) = shape
        return (
            PoolSpec(
                f"{engine.flavor}-pool", engine.flavor, n, max_num_batched_tokens=engine.chunk
            ),
        )
    (long, a), (short, b) = shape
    if long.role == "prefill":
        return (
            PoolSpec(
                f"prefill-{long.flavor}",
                long.flavor,
                a,
                min_prompt_tokens=PD_PREFILL_MIN_TOKENS,
                max_num_batched_tokens=long.chunk,
                role="prefill",
            ),
            PoolSpec(
                f"decode-{short.flavor}",
                short.flavor,
                b,
                max_num_batched_tokens=short.chunk,
                role="decode",
            ),
        )
    return (
        PoolSpec(
            f"long-{long.flavor}",
            long.flavor,
            a,
            min_prompt_tokens=HETERO_LONG_PROMPT_TOKENS,
            max_num_batched_tokens=long.chunk,
        ),
        PoolSpec(
            f"short-{short.flavor}",
            short.flavor,
            b,
            max_prompt_tokens=HETERO_LONG_PROMPT_TOKENS,
            max_num_batched_tokens=short.chunk,
        ),
    )


def _describe(shape: Shape) -> str:
    if len(shape) == 1:
        return f"{shape[0][1]} x {shape[0][0]}"
    (long, a), (short, b) = shape
    if long.role == "prefill":
        return f"{a} x {long} + {b} x {short}"
    return f"{a} x {long} (long prompts) + {b} x {short} (short)"


def _row(metrics: Metrics, shape: Shape) -> Metrics:
    return {
        **metrics,
        "cost_per_hour_usd": _cost(shape),
        "replicas": float(sum(n for _, n in shape)),
    }
