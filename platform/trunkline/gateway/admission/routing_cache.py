"""The routing policy's prefix index as the admission predictor's view of engine caches.

The gateway cannot look into an engine's KV cache, but its prefix-aware router remembers where
each prompt's blocks went (or, for ``precise-prefix``, what the engines reported). Admission asks
it how much of a prompt an endpoint will find cached, so that the replica holding a prefix is
not predicted slower than it is — and gold is not moved off it for a phantom prefill. The fleet
simulator gives the same predictor the engines' real caches instead.
"""

from __future__ import annotations

from trunkline.gateway.routing.pipeline import PipelinePolicy
from trunkline.gateway.routing.policy import RoutingPolicy
from trunkline.gateway.routing.prefix_index import PrefixIndex as RoutingIndex
from trunkline.gateway.routing.views import EndpointView, PromptView

__all__ = ["RoutingPrefixCache", "routing_prefix_cache"]


class RoutingPrefixCache:
    """``cached_tokens(prompt, endpoint)`` from a routing prefix index (full blocks only)."""

    def __init__(self, index: RoutingIndex) -> None:
        self.index = index

    def cached_tokens(self, prompt: PromptView, endpoint: EndpointView) -> int:
        hashes = prompt.block_hashes(endpoint.block_size)
        if not hashes:
            return 0
        salt = getattr(prompt, "cache_salt", None)
        [blocks] = self.index.matches(hashes, salt, [endpoint.key])
        return min(blocks * endpoint.block_size, prompt.num_tokens)


def routing_prefix_cache(policy: RoutingPolicy) -> RoutingPrefixCache | None:
    """A cache view over ``policy``'s prefix index (``None``: the policy has none)."""
    index = policy.prefix_index if isinstance(policy, PipelinePolicy) else None
    return None if index is None else RoutingPrefixCache(index)
