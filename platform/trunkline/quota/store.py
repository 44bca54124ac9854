"""The quota store protocol, what goes in and out of it, and the key layout both stores share.

A store keeps, per scope, six counters: requests and tokens of the current minute, a set of
leases (one per request in flight, each expiring unless renewed, so a crashed gateway's slots
free themselves), tokens of the day, tokens of the month and cost of the month. ``reserve``
checks every limit of every scope and, only if all pass, takes the request's share of each, in
one atomic step; ``settle`` releases the lease and corrects the counters of the windows the
reservation was made in to what the request really used. Settling twice changes nothing.

Every key of one request carries its tenant id as a Redis hash tag, so a request's keys share
one slot (a Redis Cluster can run the scripts) and tenants spread over the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from trunkline.quota.rules import Vector, Verdict
from trunkline.quota.windows import Windows

COUNTERS_PER_SCOPE = 6
LEASE_SLOT = 2
"""Position of the lease set among a scope's keys (the others are plain counters)."""


class StoreUnavailable(Exception):
    """The shared store could not be reached; raised by remote stores only."""

    maybe_reserved: Ticket | None = None
    """Set by a ``reserve`` that timed out: the store may have run it all the same, and the
    reservation is then held there, unknown to the caller, until this ticket is settled."""


class Scope(NamedTuple):
    kind: str
    """``key``, ``project`` or ``tenant``."""
    ident: str
    limits: Vector


class ReserveRequest(NamedTuple):
    request_id: str
    tenant_id: str
    scopes: tuple[Scope, ...]
    tokens: int
    cost: int
    """``NANO`` units of the price book's currency."""
    now_ms: int
    lease_ms: int
    """How long the concurrency slot lives unless renewed."""
    reservation_ttl_ms: int
    """How long the reservation can still be settled; later it stays charged in full."""


class Ticket(NamedTuple):
    """A reservation, as ``settle`` and ``renew`` need it: the keys of the windows it was made
    in (``COUNTERS_PER_SCOPE`` per scope, then the reservation's own key) and its size."""

    request_id: str
    keys: tuple[str, ...]
    tokens: int
    cost: int

    @property
    def lease_keys(self) -> tuple[str, ...]:
        return self.keys[LEASE_SLOT:-1:COUNTERS_PER_SCOPE]

    @property
    def reservation_key(self) -> str:
        return self.keys[-1]


class Outcome(NamedTuple):
    verdict: Verdict
    used: tuple[Vector, ...]
    """Per scope: the counters including this request when admitted, as found when refused."""
    ticket: Ticket | None
    windows: Windows
    local: bool = False
    """Decided by a gateway's own limiter while the shared store was unreachable."""
    local_limits: tuple[Vector, ...] = ()
    """Decided locally: the limits that limiter enforced per scope (a share of each)."""


class QuotaStore(Protocol):
    async def reserve(self, request: ReserveRequest) -> Outcome:
        """Admit and reserve, or refuse. Reserving again with the id of a reservation still
        held admits it again and counts nothing (a retry of a call that timed out)."""

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        """Release the lease and charge ``tokens`` and ``cost`` instead of the reservation
        (nothing, once the reservation's settle deadline has passed)."""

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        """Extend the leases of requests still in flight (their reservations held): to
        ``now_ms + lease_ms``, taking the slot again if the lease expired meanwhile (an outage
        kept it from being renewed); a settled request's lease is not set again."""

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        """The counters of the current windows of each ``(kind, ident)`` scope."""

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        """Tokens and cost reserved by the scope's requests in flight (lease unexpired,
        reservation not settled), and how many they are: part of its counters that may still
        be given back."""

    async def probe(self, now_ms: int) -> None:
        """One small write the store must take: raises :class:`StoreUnavailable` while it
        cannot (away, or refusing writes), as a reservation would."""

    async def close(self) -> None: ...


class KeySpace:
    """Names of the keys a store keeps, under ``<prefix>:q:{<tenant id>}:``."""

    def __init__(self, prefix: str = "trunkline") -> None:
        self.prefix = prefix

    def scope_keys(self, tenant_id: str, kind: str, ident: str, windows: Windows) -> list[str]:
        base = f"{self.prefix}:q:{{{tenant_id}}}:{kind[0]}:{ident}"
        return [
            f"{base}:r:{windows.minute}",
            f"{base}:t:{windows.minute}",
            f"{base}:c",
            f"{base}:d:{windows.day}",
            f"{base}:m:{windows.month}",
            f"{base}:n$:{windows.month}",  # NANO units (":$:", no longer read, held MICRO)
        ]

    def request_keys(self, request: ReserveRequest, windows: Windows) -> tuple[str, ...]:
        keys: list[str] = []
        for scope in request.scopes:
            keys += self.scope_keys(request.tenant_id, scope.kind, scope.ident, windows)
        keys.append(self.reservation_key(request.tenant_id, request.request_id))
        return tuple(keys)

    @property
    def probe_key(self) -> str:
        """What :meth:`QuotaStore.probe` writes (and lets expire)."""
        return f"{self.prefix}:q:probe"

    def reservation_key(self, tenant_id: str, request_id: str) -> str:
        return f"{self.prefix}:q:{{{tenant_id}}}:res:{request_id}"
