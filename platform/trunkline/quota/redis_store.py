"""The Redis quota store: one script call to reserve, one to settle, shared by every replica.

Connection failures, timeouts and a Redis refusing writes (a replica after a failover, out of
memory: ``kit.redis_errors``) surface as ``StoreUnavailable``, which the gateway's
``FallbackQuotaStore`` turns into local limiting. Scripts are sent by SHA; after a Redis restart
redis-py loads them again on the first ``NOSCRIPT``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from trunkline.kit.redis_errors import redis_unavailable
from trunkline.kit.redis_replies import reply_text
from trunkline.quota import lua
from trunkline.quota.rules import ADMITTED, Vector, Verdict
from trunkline.quota.store import (
    COUNTERS_PER_SCOPE,
    LEASE_SLOT,
    KeySpace,
    Outcome,
    ReserveRequest,
    StoreUnavailable,
    Ticket,
)
from trunkline.quota.windows import windows_at

T = TypeVar("T")


class RedisQuotaStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "trunkline") -> None:
        self._client = client
        self._space = KeySpace(prefix)
        self._reserve = client.register_script(lua.RESERVE)
        self._settle = client.register_script(lua.SETTLE)
        self._renew = client.register_script(lua.RENEW)

    @property
    def keyspace(self) -> KeySpace:
        return self._space

    async def reserve(self, request: ReserveRequest) -> Outcome:
        windows = windows_at(request.now_ms)
        keys = self._space.request_keys(request, windows)
        args: list[str | int] = [
            request.now_ms, request.lease_ms, request.request_id, request.tokens, request.cost,
            request.reservation_ttl_ms, *windows.ttls_ms(),
        ]  # fmt: skip
        for scope in request.scopes:
            args.extend(scope.limits)
        ticket = Ticket(request.request_id, keys, request.tokens, request.cost)
        try:
            reply = await _call(lambda: self._reserve(keys=keys, args=args))
        except StoreUnavailable as exc:
            exc.maybe_reserved = ticket  # a call that timed out may have run in Redis
            raise
        limit, refusing, never = int(reply[0]), int(reply[1]), bool(reply[2])
        used = _vectors(reply[3:])
        if limit >= 0:
            return Outcome(Verdict(limit, refusing, never), used, None, windows)
        return Outcome(ADMITTED, used, ticket, windows)

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        args: list[str | int] = [ticket.request_id, tokens, cost, now_ms]
        await _call(lambda: self._settle(keys=ticket.keys, args=args))

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        keys: list[str] = []
        members: list[str] = []
        for ticket in tickets:
            for key in ticket.lease_keys:
                keys += (key, ticket.reservation_key)
                members.append(ticket.request_id)
        if keys:
            args: list[str | int] = [now_ms + lease_ms, lease_ms, *members]
            await _call(lambda: self._renew(keys=keys, args=args))

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        windows = windows_at(now_ms)

        async def read() -> list[Any]:
            async with self._client.pipeline(transaction=False) as pipe:
                for kind, ident in scopes:
                    keys = self._space.scope_keys(tenant_id, kind, ident, windows)
                    for field, key in enumerate(keys):
                        if field == 2:
                            pipe.zcount(key, f"({now_ms}", "+inf")
                        else:
                            pipe.get(key)
                result: list[Any] = await pipe.execute()
                return result

        return list(_vectors(await _call(read)))

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        keys = self._space.scope_keys(tenant_id, kind, ident, windows_at(now_ms))

        async def read() -> list[Any]:
            found = await self._client.zrangebyscore(keys[LEASE_SLOT], f"({now_ms}", "+inf")
            members = cast("list[bytes | str]", found)  # request ids (no scores asked)
            if not members:
                return []
            names = [self._space.reservation_key(tenant_id, reply_text(m)) for m in members]
            return list(await self._client.mget(names))

        tokens = cost = count = 0
        for record in await _call(read):
            if record is None:
                continue  # settled (or expired) since the lease was read
            reserved, charged, deadline = (int(part) for part in reply_text(record).split(":"))
            if deadline > now_ms:
                tokens, cost, count = tokens + reserved, cost + charged, count + 1
        return tokens, cost, count

    async def probe(self, now_ms: int) -> None:
        await _call(lambda: self._client.set(self._space.probe_key, now_ms, px=60_000))

    async def close(self) -> None:
        await self._client.aclose()


POOL_SIZE = 128
"""Connections to Redis per gateway process; more calls at once wait for one."""
POOL_WAIT_S = 1.0
"""How long a call waits for a free connection, at least (the store timeout, if longer): in a
burst the wait is the event loop's and the other calls', not Redis's."""


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client for the gateway's quota calls: a short timeout, so an unreachable Redis turns
    into local limiting quickly, and one immediate retry, so a connection a restarted Redis
    dropped is replaced without failing the request. A burst of calls beyond ``POOL_SIZE``
    waits for a connection: redis-py's default pool refuses them at once ("Too many
    connections"), which turned a burst of requests into an outage of Redis."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=max(POOL_WAIT_S, timeout_s),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1),
    )
    return aioredis.Redis.from_pool(pool)


async def _call(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except redis.RedisError as exc:  # a replica after a failover, out of memory...: an outage
        if not redis_unavailable(exc):
            raise
        raise StoreUnavailable(f"quota store unavailable: {exc}") from exc
    except OSError as exc:
        raise StoreUnavailable(f"quota store unreachable: {exc}") from exc


def _vectors(flat: Sequence[Any]) -> tuple[Vector, ...]:
    numbers = [int(value or 0) for value in flat]
    return tuple(
        (numbers[i], numbers[i + 1], numbers[i + 2], numbers[i + 3], numbers[i + 4], numbers[i + 5])
        for i in range(0, len(numbers), COUNTERS_PER_SCOPE)
    )
