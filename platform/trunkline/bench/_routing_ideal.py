"""Ideal bounds of the ``placement`` section of ``trunkline bench routing``: what mixing flavors
could save on a trace at the hardware profiles' nominal rates per dollar, with no SLO, no batching
limits and fractional replicas. Pure arithmetic over the workload and the profiles."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from trunkline.bench._routing_capacity import HETERO_LONG_PROMPT_TOKENS

if TYPE_CHECKING:
    from trunkline.workloads import Workload

__all__ = ["Bounds", "best_pair", "ideal_bounds", "ideal_mix_ratio", "work_costs"]


def ideal_mix_ratio(costs: Mapping[str, Mapping[str, float]]) -> float:
    """What placing each class on its cheapest flavor costs over the cheapest flavor for all,
    ``costs[class][flavor]`` being a class's cost on a flavor (every class on every flavor)."""
    flavors = set.intersection(*(set(by_flavor) for by_flavor in costs.values()))
    mix = sum(min(by_flavor[f] for f in flavors) for by_flavor in costs.values())
    single = min(sum(by_flavor[f] for by_flavor in costs.values()) for f in flavors)
    return mix / single


def work_costs(
    workload: Workload, flavors: Sequence[str], *, by: str = "class"
) -> dict[str, dict[str, float]]:
    """The trace's work in dollars per flavor at the profiles' nominal rates, with no SLO, no
    batching limits and fractional replicas: prompt tokens at full-chunk prefill speed, answer
    tokens at the nominal decode batch (``nominal_tokens_per_s``).

    ``by="class"``: each prompt class's cost, both phases (where placement by prompt length
    can send it). ``by="phase"``: the prefill of every request, and the decoding of every
    request (where a pool per phase, prefill/decode disaggregation with free KV transfer,
    could send it)."""
    from trunkline.engines.profiles import get_profile
    from trunkline.fleet import FLAVOR_PRICES
    from trunkline.fleet.spec import nominal_tokens_per_s

    if by not in ("class", "phase"):
        raise ValueError(f"by must be 'class' or 'phase', not {by!r}")
    tokens = {"long": [0, 0], "short": [0, 0]}
    for request in workload.requests():
        prompt = request.prompt.num_tokens
        counts = tokens["long" if prompt >= HETERO_LONG_PROMPT_TOKENS else "short"]
        counts[0] += prompt
        counts[1] += request.max_tokens
    if by == "phase":
        prompts, answers = (sum(column) for column in zip(*tokens.values(), strict=True))
        tokens = {"prefill": [prompts, 0], "decode": [0, answers]}
    costs: dict[str, dict[str, float]] = {}
    for name, (prompt, output) in tokens.items():
        costs[name] = {}
        for flavor in flavors:
            profile = get_profile(flavor)
            seconds = prompt / profile.prefill_tokens_per_s()
            seconds += output / nominal_tokens_per_s(profile)
            costs[name][flavor] = seconds * FLAVOR_PRICES[flavor] / 3600
    return costs


def best_pair(costs: Mapping[str, Mapping[str, float]]) -> tuple[float, tuple[str, str]]:
    """The pair of flavors whose ideal mix (:func:`ideal_mix_ratio`) saves the most against the
    cheaper of the two alone, and that ratio; ties go to the pair named first in sorted order."""
    flavors = sorted(set.intersection(*(set(by_flavor) for by_flavor in costs.values())))
    if len(flavors) < 2:
        raise ValueError("a pair needs two flavors priced for every class")
    pairs = itertools.combinations(flavors, 2)
    return min(
        (ideal_mix_ratio({c: {f: by[f] for f in pair} for c, by in costs.items()}), pair)
        for pair in pairs
    )


class Bounds(NamedTuple):
    notes: list[str]
    inputs: dict[str, object]


def ideal_bounds(workload: Workload) -> Bounds:
    """How far any mix of the priced presets could go on this trace at the profiles' rates:
    the best pair, placed by prompt class or split by phase, against the cheaper of the two
    alone; and every preset together against the cheapest one alone."""
    from trunkline.fleet import FLAVOR_PRICES

    every = tuple(sorted(FLAVOR_PRICES))
    notes: list[str] = []
    inputs: dict[str, object] = {"flavors": list(every)}
    splits = (
        ("class", "placed by prompt class"),
        ("phase", "prefill and decoding on separate pools, the KV moved free"),
    )
    for by, how in splits:
        costs = work_costs(workload, every, by=by)
        ratio, pair = best_pair(costs)
        overall = ideal_mix_ratio(costs)
        cheapest = min(every, key=lambda f: sum(by_flavor[f] for by_flavor in costs.values()))
        notes.append(
            f"ideal, {how} (no SLO, fractional replicas): best pair of the "
            f"{len(every)} priced presets {' + '.join(pair)} {ratio:.3f} of the cheaper alone; "
            f"every preset {overall:.3f} of the cheapest, {cheapest}"
        )
        inputs[by] = {
            "best_pair": list(pair),
            "best_pair_ratio": ratio,
            "every_preset_ratio": overall,
            "cheapest_preset": cheapest,
        }
    return Bounds(notes, inputs)
