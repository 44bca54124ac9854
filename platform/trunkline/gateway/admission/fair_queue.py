"""The short hold queue of one pool: strict priority between tiers, round robin between the
tenants of a tier.

Each tier keeps one FIFO per tenant and a ring of the tenants with something held; the next
request served is the head of the first tenant on the ring of the highest-priority tier that holds
anything, and serving it moves that tenant to the back of the ring. A tenant that floods the queue
therefore gets one turn per round like every other tenant of its tier, and its own requests wait
behind each other, not in front of its peers'.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from trunkline.gateway.routing.views import EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["FairQueue", "Held"]


@dataclass(slots=True)
class Held:
    ticket: int
    request: RequestView
    tier: TierEntry
    ranked: tuple[EndpointView, ...]
    arrival: float
    deadline: float
    """Latest time its first token may come (arrival + the tier's TTFT SLO)."""
    min_ttft_s: float = 0.0
    """Its predicted TTFT on an idle endpoint of the ranking: the least any dispatch takes."""


@dataclass(slots=True)
class _Tier:
    priority: int
    tenants: dict[str, deque[Held]]
    ring: deque[str]


class FairQueue:
    def __init__(self) -> None:
        self._tiers: dict[str, _Tier] = {}
        self._by_ticket: dict[int, Held] = {}

    def __len__(self) -> int:
        return len(self._by_ticket)

    def __contains__(self, ticket: int) -> bool:
        return ticket in self._by_ticket

    def push(self, held: Held) -> None:
        tier = self._tiers.get(held.tier.name)
        if tier is None:
            tier = self._tiers[held.tier.name] = _Tier(held.tier.priority, {}, deque())
        tier.priority = held.tier.priority  # the platform may have moved it since
        fifo = tier.tenants.get(held.request.tenant)
        if fifo is None:
            fifo = tier.tenants[held.request.tenant] = deque()
            tier.ring.append(held.request.tenant)
        fifo.append(held)
        self._by_ticket[held.ticket] = held

    def held_at_or_above(self, priority: int) -> int:
        """How many held requests a request of ``priority`` would wait behind."""
        return sum(
            sum(len(f) for f in t.tenants.values())
            for t in self._tiers.values()
            if t.priority >= priority
        )

    def held_by(self, tier: str, tenant: str) -> int:
        """How many requests ``tenant`` has held in ``tier``."""
        own = self._tiers.get(tier)
        return 0 if own is None else len(own.tenants.get(tenant, ()))

    def tenants_at_or_above(self, priority: int) -> list[tuple[str, int, str]]:
        """``(tier, priority, tenant)`` of every tenant with something held at ``priority`` or
        above."""
        return [
            (name, tier.priority, tenant)
            for name, tier in self._tiers.items()
            if tier.priority >= priority
            for tenant in tier.ring
        ]

    def ahead_of(
        self, priority: int, tier: str, tenant: str, skip: Collection[tuple[str, str]] = ()
    ) -> int:
        """How many held requests a new request of ``tenant`` would wait behind: all of the
        tiers above, and in its own tier, by round robin, as many per tenant as its own tenant
        has held plus one. The ``(tier, tenant)`` pairs in ``skip`` (waiting for room, passed
        over when the queue is served) do not count."""
        above = sum(
            len(fifo)
            for name, t in self._tiers.items()
            if t.priority > priority
            for other, fifo in t.tenants.items()
            if (name, other) not in skip
        )
        own = self._tiers.get(tier)
        if own is None:
            return above
        depth = len(own.tenants.get(tenant, ()))
        return (
            above
            + depth
            + sum(
                min(len(fifo), depth + 1)
                for other, fifo in own.tenants.items()
                if other != tenant and (tier, other) not in skip
            )
        )

    def next(self) -> Held | None:
        """The request to serve next (not removed)."""
        for tier in self._ordered():
            if tier.ring:
                return tier.tenants[tier.ring[0]][0]
        return None

    def in_order(self) -> list[Held]:
        """Every held request in the order they would be served if nothing else arrived."""
        out: list[Held] = []
        for tier in self._ordered():
            fifos = [tier.tenants[tenant] for tenant in tier.ring]
            for depth in range(max((len(f) for f in fifos), default=0)):
                out.extend(fifo[depth] for fifo in fifos if depth < len(fifo))
        return out

    def items(self) -> Iterator[Held]:
        return iter(list(self._by_ticket.values()))

    def remove(self, ticket: int, *, served: bool = True) -> Held | None:
        """Take ``ticket`` out; if it was served in its tenant's turn, the turn passes to the
        next one (one leaving unserved, cancelled or expired, leaves the turn to its tenant's
        next request)."""
        held = self._by_ticket.pop(ticket, None)
        if held is None:
            return None
        tier = self._tiers[held.tier.name]
        tenant = held.request.tenant
        fifo = tier.tenants[tenant]
        served_turn = served and bool(tier.ring) and tier.ring[0] == tenant and fifo[0] is held
        fifo.remove(held)
        if not fifo:
            del tier.tenants[tenant]
            tier.ring.remove(tenant)
        elif served_turn:
            tier.ring.rotate(-1)
        return held

    def lowest(self) -> Held | None:
        """The request to shed first: the lowest tier's newest, from its tenant holding the most."""
        for tier in reversed(self._ordered()):
            if tier.tenants:
                fifo = max(tier.tenants.values(), key=lambda f: (len(f), f[-1].ticket))
                return fifo[-1]
        return None

    def _ordered(self) -> list[_Tier]:
        return sorted(self._tiers.values(), key=lambda t: -t.priority)
