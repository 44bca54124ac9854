"""``least-loaded``: fewest requests in the engine (running + waiting), then least KV in use.

Ties — common when engines are idle or the loads are not scraped yet — rotate like round-robin
(one ring per set of endpoints), so equal endpoints share the traffic instead of the first one
taking it all.
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.round_robin import Rotation
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["LeastLoadedPolicy"]


class LeastLoadedPolicy:
    name = "least-loaded"

    def __init__(self) -> None:
        self._rotation = Rotation()

    def rank(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[int]:
        if not endpoints:
            return []
        # Ties go in the ring's order this turn: ejected endpoints after those in service.
        turn = {index: place for place, index in enumerate(self._rotation.order(endpoints))}

        def key(index: int) -> tuple[float, float, int]:
            load = endpoints[index].load
            return (load.running + load.waiting, load.kv_usage, turn[index])

        return sorted(turn, key=key)

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None
