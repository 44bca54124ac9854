"""A shared quota store that can be taken away and brought back, for the fallback tests, and
the gateway's answers to a run of requests."""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.rules import Vector
from trunkline.quota.store import Outcome, ReserveRequest, StoreUnavailable, Ticket
from unit.quota.conftest import Gateway
from unit.quota.test_quota_gateway import CHAT


class Flaky:
    """A shared store that can be taken away and brought back."""

    def __init__(self) -> None:
        self.inner = InMemoryQuotaStore()
        self.down = False

    def _reachable(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")

    async def reserve(self, request: ReserveRequest) -> Outcome:
        self._reachable()
        return await self.inner.reserve(request)

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        self._reachable()
        await self.inner.settle(ticket, tokens, cost, now_ms)

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        self._reachable()
        await self.inner.renew(tickets, now_ms, lease_ms)

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        return await self.inner.usage(tenant_id, scopes, now_ms)

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        self._reachable()
        return await self.inner.held(tenant_id, kind, ident, now_ms)

    async def probe(self, now_ms: int) -> None:
        self._reachable()

    async def close(self) -> None:
        return None


class RanButTimedOut(Flaky):
    """A store whose reserve calls time out after the store ran them (a Redis busy for longer
    than the client waits), reported as ``RedisQuotaStore`` does: with the ticket it may hold."""

    async def reserve(self, request: ReserveRequest) -> Outcome:
        if not self.down:
            return await self.inner.reserve(request)
        outcome = await self.inner.reserve(request)
        exc = StoreUnavailable("Timeout reading from redis")
        exc.maybe_reserved = outcome.ticket
        raise exc


def statuses(gw: Gateway, count: int) -> list[int]:
    return [gw.post(CHAT).status_code for _ in range(count)]
