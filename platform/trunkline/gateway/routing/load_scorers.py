"""Scorers over the endpoints' load and price, each normalised across the candidates to [0, 1].

- ``queue-depth``: requests in the engine (running + waiting) over its relative capacity (1 in
  a uniform pool, see :mod:`~trunkline.gateway.routing.capacity`); the shortest queue scores 1,
  the longest 0, all equal 1 (as llm-d's queue scorer);
- ``kv-usage``: the free share of the KV cache, ``1 - kv_usage``;
- ``cost``: cost per output token, ``cost_per_hour / 3600 / tokens_per_s``; the cheapest scores
  1 and the others ``cheapest / theirs``; an endpoint with no known price scores 0 (all unknown:
  all 1, so cost decides nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.capacity import relative_capacity
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["CostScorer", "KvUsageScorer", "QueueDepthScorer", "cost_per_token"]


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


class CostScorer:
    name = "cost"

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        costs = [cost_per_token(e) for e in endpoints]
        known = [c for c in costs if c is not None]
        if not known:
            return [1.0] * len(costs)
        cheapest = min(known)
        return [0.0 if c is None else (cheapest / c if c > 0 else 1.0) for c in costs]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None
