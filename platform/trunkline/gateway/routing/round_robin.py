"""``round-robin``: each request starts one endpoint further along the ring."""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["RoundRobinPolicy"]


class RoundRobinPolicy:
    """Orders endpoints starting after the last one used, so retries walk the ring."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def rank(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[int]:
        count = len(endpoints)
        if count == 0:
            return []
        start = self._next % count
        self._next += 1
        return [*range(start, count), *range(start)]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None
