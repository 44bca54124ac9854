"""``prefix-affinity``: the share of the prompt's full blocks an endpoint already caches.

The prompt is hashed at each endpoint's block size (endpoints of different pools may differ;
their shares are then of the tokens in full blocks at the size covering most of the prompt, so
an endpoint holding more of it scores more whatever its block size)
through the request's :class:`~trunkline.gateway.routing.views.PromptView`, which caches the
hashes; the :class:`~trunkline.gateway.routing.prefix_index.PrefixIndex` says how many leading
blocks each endpoint holds. A request with no prompt view or no full block scores 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.prefix_index import PrefixIndex
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["PrefixAffinityScorer"]


class PrefixAffinityScorer:
    name = "prefix-affinity"

    def __init__(self, index: PrefixIndex) -> None:
        self.index = index

    def score(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        scores = [0.0] * len(endpoints)
        prompt = request.prompt
        if prompt is None or not endpoints:
            return scores
        by_size: dict[int, list[int]] = {}
        for position, endpoint in enumerate(endpoints):
            by_size.setdefault(endpoint.block_size, []).append(position)
        hashed = {size: prompt.block_hashes(size) for size in by_size}
        # Shares of the tokens in full blocks at the size that has the most: the same tokens
        # held score the same whatever the block size (in one size: the share of its blocks).
        covered = max(len(hashes) * size for size, hashes in hashed.items())
        if not covered:
            return scores
        for block_size, positions in by_size.items():
            hashes = hashed[block_size]
            if not hashes:
                continue
            keys = [endpoints[p].key for p in positions]
            for position, matched in zip(
                positions, self.index.matches(hashes, request.cache_salt, keys), strict=True
            ):
                scores[position] = matched * block_size / covered
        return scores

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        self.index.routed(request, endpoint)
