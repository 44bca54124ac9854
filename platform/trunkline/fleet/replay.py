"""Loads measured on real engines, replayed in the simulator, and both sides summarised.

A :class:`Load` generates requests (Poisson arrivals, prompt length, a shared prefix share, an
optional mix of long prompts); :func:`simulate_replay` sends the same requests at the times they
were really sent to simulated engines; :func:`summary` reduces either side to the figures a
fidelity check compares (median TTFT, median inter-token latency, output throughput).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from trunkline.engines.profiles import AcceleratorProfile
from trunkline.fleet.results import RequestOutcome
from trunkline.fleet.simulator import simulate
from trunkline.fleet.spec import FleetSpec, PoolSpec
from trunkline.gateway.routing import make_policy
from trunkline.workloads import Prompt, WorkloadRequest, segment, stable_key
from trunkline.workloads.driver import Measured

__all__ = [
    "Load",
    "build_requests",
    "measured_summary",
    "outcome_summary",
    "relative_errors",
    "same_ranking",
    "simulate_replay",
]

LONG_PROMPT = 1500


@dataclass(frozen=True, slots=True)
class Load:
    name: str
    rate: float
    """Poisson arrivals per second (0: all at once)."""
    count: int
    prompt_tokens: int
    shared_tokens: int
    output_tokens: int
    long_share: float = 0.0
    """Share of requests with a 1,500-token prompt and ``long_output`` tokens instead (a mix)."""
    long_every: int = 0
    """Make every ``long_every``-th request long instead (a pattern round-robin can trip on)."""
    long_output: int = 8
    prefix_groups: int = 1
    """Requests draw one of this many shared prefixes (each ``shared_tokens`` long)."""
    content: str = ""
    """Another value gives the same arrivals and lengths with other tokens, so a second run of
    the load on the same engines finds nothing of the first in their prefix caches."""


def build_requests(load: Load, seed: int, *, vocab: int = 4000) -> list[WorkloadRequest]:
    """The load's requests; token ids fall in ``[100, vocab)`` (a small model's vocabulary).

    Every load has its own tokens (its shared prefix included): a load run after another on the
    same engine finds none of its prompts cached, as a fresh simulated engine would not.
    """
    rng = random.Random(f"{seed}:{load.name}")
    text = f"{load.name}:{load.content}"
    shared_prefixes = [
        segment(stable_key(f"replay-shared-{text}", seed, group), load.shared_tokens)
        for group in range(max(load.prefix_groups, 1))
    ]
    at, requests = 0.0, []
    for index in range(load.count):
        at += rng.expovariate(load.rate) if load.rate > 0 else 0.0
        long = rng.random() < load.long_share or (load.long_every and index % load.long_every == 0)
        length, output = (
            (LONG_PROMPT, load.long_output) if long else (load.prompt_tokens, load.output_tokens)
        )
        own = segment(stable_key(f"replay-{text}", seed, index), length)
        # One draw more only for several groups: a single-prefix load keeps its arrivals.
        group = rng.randrange(len(shared_prefixes)) if len(shared_prefixes) > 1 else 0
        tokens = own if long else (shared_prefixes[group] + own)[:length]
        prompt = Prompt([100 + token % (vocab - 100) for token in tokens])
        requests.append(WorkloadRequest(f"{load.name}-{index}", at, "replay", prompt, output))
    return requests


@dataclass(frozen=True, slots=True)
class _Replay:
    items: tuple[WorkloadRequest, ...]
    name: str = "replay"
    duration_s: float = 0.0

    @property
    def tenants(self) -> Mapping[str, str]:
        return {"replay": "silver"}

    def requests(self) -> Iterator[WorkloadRequest]:
        return iter(self.items)


def simulate_replay(
    profile: AcceleratorProfile,
    replicas: int,
    requests: Sequence[WorkloadRequest],
    measured: Sequence[Measured],
    policy: str,
) -> list[RequestOutcome]:
    """The requests at their measured send times through ``policy`` on simulated engines."""
    sent = {m.request_id: m.sent for m in measured}
    replayed = sorted(
        (dataclasses.replace(r, arrival=sent[r.request_id]) for r in requests),
        key=lambda r: r.arrival,
    )
    spec = FleetSpec(pools=(PoolSpec("replay", profile, replicas, cost_per_hour=0.0),))
    return simulate(spec, make_policy(policy), _Replay(tuple(replayed))).outcomes


def _summary(ttft: list[float], spans: list[tuple[float, float]], tokens: int) -> dict[str, float]:
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return {
        "ttft_p50_s": statistics.median(ttft),
        "ttft_mean_s": statistics.fmean(ttft),
        "throughput_tok_s": tokens / span,
    }


def measured_summary(
    measured: Sequence[Measured], itl_mean_s: float | None = None
) -> dict[str, float]:
    """What the client saw; the mean inter-token latency comes from the engine's own histogram
    (:func:`~trunkline.workloads.driver.inter_token_totals`) when given."""
    summary = _summary(
        [m.ttft for m in measured],
        [(m.sent, m.sent + m.e2e) for m in measured],
        sum(m.completion_tokens for m in measured),
    )
    if itl_mean_s is not None:
        summary["itl_mean_s"] = itl_mean_s
    return summary


def outcome_summary(outcomes: Sequence[RequestOutcome]) -> dict[str, float]:
    done = [o for o in outcomes if o.status == "ok"]
    summary = _summary(
        [o.ttft for o in done],
        [(o.arrival, o.arrival + o.e2e) for o in done],
        sum(o.completion_tokens for o in done),
    )
    gaps = sum(o.completion_tokens - 1 for o in done)
    summary["itl_mean_s"] = sum(o.e2e - o.ttft for o in done) / gaps if gaps else 0.0
    return summary


def relative_errors(
    real: Mapping[str, float], sim: Mapping[str, float], metric: str
) -> list[float]:
    """``|sim - real| / real`` of every ``<load>.<metric>`` (ranking loads aside), ascending."""
    return sorted(
        abs(sim[key] - real[key]) / real[key]
        for key in real
        if key.endswith(f".{metric}") and not key.startswith("ranking") and real[key] > 0
    )


def same_ranking(
    real: Mapping[str, float], sim: Mapping[str, float], pattern: str, *, margin: float = 0.05
) -> bool:
    """Whether both sides order the policies the same way on ``pattern.format(policy)``, with
    each value at least ``margin`` (relative) above the one before on both sides: a tie on
    either side ranks nothing."""
    keys = sorted((key for key in real if _matches(key, pattern)), key=real.__getitem__)
    return all(
        side[b] >= side[a] * (1 + margin)
        for side in (real, sim)
        for a, b in itertools.pairwise(keys)
    )


def _matches(key: str, pattern: str) -> bool:
    head, _, tail = pattern.partition("{}")
    return key.startswith(head) and key.endswith(tail)
