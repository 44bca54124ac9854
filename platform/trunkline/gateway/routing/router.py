"""Apply a routing policy to the gateway's candidates: build the views, map the ranking back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trunkline.gateway.routing.candidates import Candidate
from trunkline.gateway.routing.policy import RoutingPolicy
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, PromptRange, RequestView

__all__ = ["Router", "endpoint_view"]

_NO_LOAD = EndpointLoad()


def endpoint_view(
    candidate: Candidate, load: EndpointLoad | None = None, *, healthy: bool = True
) -> EndpointView:
    pool = candidate.pool
    load = load or _NO_LOAD
    return EndpointView(
        key=candidate.endpoint.id,
        pool=pool.name,
        region=pool.region,
        accelerator=pool.accelerator,
        block_size=pool.block_size,
        load=load,
        cost_per_hour=pool.cost_per_hour,
        tokens_per_s=pool.tokens_per_s,
        healthy=healthy,
        burst=pool.burst,
        model=pool.model,
        # The engine's own figure first: the pool's is a configured guess.
        kv_capacity_tokens=load.kv_capacity_tokens or pool.kv_capacity_tokens or None,
        prompt_tokens=_prompt_range(pool.min_prompt_tokens, pool.max_prompt_tokens),
        tiers=pool.tiers,
        max_num_batched_tokens=pool.max_num_batched_tokens,
    )


def _prompt_range(low: int, high: int | None) -> PromptRange | None:
    return PromptRange(low, high) if low or high is not None else None


class Router:
    """Orders candidates with one policy; loads are keyed by endpoint id (missing: unknown)."""

    def __init__(self, policy: RoutingPolicy) -> None:
        self.policy = policy

    def order(
        self,
        request: RequestView,
        candidates: Sequence[Candidate],
        loads: Mapping[str, EndpointLoad] | None = None,
    ) -> list[Candidate]:
        known = loads or {}
        views = [endpoint_view(c, known.get(c.endpoint.id)) for c in candidates]
        return [candidates[index] for index in self.policy.rank(request, views)]
