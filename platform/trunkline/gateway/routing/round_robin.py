"""``round-robin``: each request starts one endpoint further along the ring.

The ring turns per set of endpoints (:class:`Rotation`): one gateway routes many aliases, and
tenants of different regions see different endpoints of one alias. A single counter for all
of them would skip an alias's turns whenever others' requests come in between — with two
aliases' requests alternating, every request of each would start at its first endpoint.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["Rotation", "RoundRobinPolicy"]


class Rotation:
    """Where the next request over each set of endpoints starts, the sets told apart by their
    endpoints' keys in order. At most ``max_sets`` are remembered (replicas come and go, each
    change a new set): past that the ring turned longest ago is forgotten, so a busy alias's
    ring is never reset by sets seen once. A new ring starts where the rings made before it
    leave off, not at its first endpoint."""

    def __init__(self, max_sets: int = 4096) -> None:
        self.max_sets = max_sets
        self._next: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._made = 0

    def order(self, endpoints: Sequence[EndpointView]) -> list[int]:
        """Every index of ``endpoints`` (not empty): those in service from this turn's start,
        then the ejected ones. The ring is the set's, ejected endpoints included, so an
        ejection does not restart it; the turns go round the endpoints in service only, so an
        ejected one's turns are shared by all the others, not taken by its neighbour."""
        turn = self._turn(endpoints)
        up = [i for i, e in enumerate(endpoints) if e.healthy]
        if len(up) in (0, len(endpoints)):
            start = turn % len(endpoints)
            return [*range(start, len(endpoints)), *range(start)]
        start = turn % len(up)
        return up[start:] + up[:start] + [i for i, e in enumerate(endpoints) if not e.healthy]

    def _turn(self, endpoints: Sequence[EndpointView]) -> int:
        """How many turns the ring of ``endpoints`` has had; the next time, one more."""
        ring = tuple(e.key for e in endpoints)
        turn = self._next.get(ring)
        if turn is None:
            if len(self._next) >= self.max_sets:
                self._next.popitem(last=False)
            turn, self._made = self._made, self._made + 1
        else:
            self._next.move_to_end(ring)
        self._next[ring] = turn + 1
        return turn


class RoundRobinPolicy:
    """Orders endpoints starting after the last one used, so retries walk the ring."""

    name = "round-robin"

    def __init__(self) -> None:
        self._rotation = Rotation()

    def rank(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[int]:
        return self._rotation.order(endpoints) if endpoints else []

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None
