"""Scorers over the endpoints' load and price, each normalised across the candidates to [0, 1].

- ``queue-depth``: requests in the engine (running + waiting) over its relative capacity (1 in
  a uniform pool, see :mod:`~trunkline.gateway.routing.capacity`); the shortest queue scores 1,
  the longest 0, all equal 1 (as llm-d's queue scorer);
- ``kv-usage``: the free share of the KV cache, ``1 - kv_usage``;
- ``cost``: what the request would cost there — its prompt at the accelerator's nominal prefill
  rate and its answer at the pool's ``tokens_per_s``, at ``cost_per_hour`` (see
  :class:`CostScorer`); the cheapest scores 1 and the others ``cheapest / theirs``; an endpoint
  with no known price scores 0 (all unknown: all 1, so cost decides nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.engines.profiles import nominal_prefill_tokens_per_s
from trunkline.gateway.routing.capacity import relative_capacity
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = [
    "CostScorer",
    "KvUsageScorer",
    "PrefillQueueScorer",
    "QueueDepthScorer",
    "cost_per_token",
]


class QueueDepthScorer:
    name = "queue-depth"

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        weights = relative_capacity(endpoints)
        depths = [
            (e.load.running + e.load.waiting) / weight
            for e, weight in zip(endpoints, weights, strict=True)
        ]
        if not depths:
            return []
        low, high = min(depths), max(depths)
        if high <= low:
            return [1.0] * len(depths)
        span = high - low
        return [(high - depth) / span for depth in depths]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None


class PrefillQueueScorer:
    """How soon the request's prompt would be prefilled: the prompt tokens queued on the endpoint
    (``queued_prompt_tokens``) plus its own, over the endpoint's prefill rate (measured, else
    its accelerator's nominal rate). The soonest scores 1, the others ``soonest / theirs``.

    ``queue-depth`` counts requests, so a replica holding one 8k-token prompt looks as free as
    one holding a 100-token prompt; in a mixed fleet a slow flavor's queue of long prompts is
    what stretches their TTFT. An endpoint not measured yet is rated at its accelerator's preset,
    which may be far from the engine's real speed until its first scrapes.
    """

    name = "prefill-queue"

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        prompt = request.num_prompt_tokens
        waits = []
        for endpoint in endpoints:
            measured = endpoint.load.prefill_tokens_per_s
            rate = measured or nominal_prefill_tokens_per_s(endpoint.accelerator)
            if not rate:
                return [1.0] * len(endpoints)  # a rate unknown: no comparison
            waits.append((endpoint.load.queued_prompt_tokens + max(prompt, 1)) / rate)
        if not waits:
            return []
        soonest = min(waits)
        return [soonest / wait for wait in waits]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None


class KvUsageScorer:
    name = "kv-usage"

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        return [min(1.0, max(0.0, 1.0 - e.load.kv_usage)) for e in endpoints]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None


def cost_per_token(endpoint: EndpointView) -> float | None:
    """USD per output token at the endpoint's nominal throughput; None when unknown."""
    if endpoint.cost_per_hour is None or not endpoint.tokens_per_s:
        return None
    return endpoint.cost_per_hour / 3600.0 / endpoint.tokens_per_s


TYPICAL_OUTPUT_TOKENS = 256
"""The answer assumed for a request that sets no ``max_tokens``."""


class CostScorer:
    """What this request would cost on each endpoint: its prompt at the accelerator's nominal
    prefill rate plus its answer (``max_tokens``) at the pool's ``tokens_per_s``, at the
    endpoint's price.

    Flavors differ in what they do cheaply: compute per dollar prices a prefill token, memory
    bandwidth per dollar a decode token. A long prompt with a short answer is then cheapest on
    one flavor and a chat turn with a long answer on another (as Mélange, Griggs et al. 2024,
    found for heterogeneous GPU fleets). The prefill rate comes from the accelerator's engine
    profile; when an endpoint's accelerator has none, every endpoint is priced by its answer alone.
    """

    name = "cost"

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        prompt = request.num_prompt_tokens
        output = request.max_tokens or TYPICAL_OUTPUT_TOKENS
        rates = [nominal_prefill_tokens_per_s(e.accelerator) for e in endpoints]
        with_prompt = prompt > 0 and all(rates)
        costs: list[float | None] = []
        for endpoint, rate in zip(endpoints, rates, strict=True):
            per_token = cost_per_token(endpoint)
            if per_token is None:
                costs.append(None)
                continue
            seconds_of_prompt = prompt / rate if with_prompt and rate else 0.0
            per_second = endpoint.cost_per_hour / 3600.0 if endpoint.cost_per_hour else 0.0
            costs.append(output * per_token + seconds_of_prompt * per_second)
        known = [c for c in costs if c is not None]
        if not known:
            return [1.0] * len(costs)
        cheapest = min(known)
        return [0.0 if c is None else (cheapest / c if c > 0 else 1.0) for c in costs]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None
