"""The gateways of the quota-accuracy benchmark, as production runs them (snapshot and quota
counters in Redis), and the snapshot they serve (``publish_world``). Run as
``python -m trunkline.bench._quota_gateway --redis-url URL --port P --secret-file F
[--baseline-tenant ID]``.

Requests of ``--baseline-tenant`` are accounted the way many gateways do it, the baseline the
benchmark compares with: admitted while the tenant's counter is below its limit, charged only
once the answer is complete (``SettleAfterResponse``). Every other tenant reserves its prompt
estimate plus ``max_tokens`` before the request is sent, as Trunkline does.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import msgspec
import redis

from trunkline.errors import TrunklineError
from trunkline.quota.rules import Vector
from trunkline.quota.store import Outcome, QuotaStore, ReserveRequest, Ticket


class SettleAfterResponse:
    """Reserve one token (admit while the counter is below the limit), settle to actual usage."""

    def __init__(self, store: QuotaStore, tenant_id: str) -> None:
        self._store = store
        self._tenant_id = tenant_id

    async def reserve(self, request: ReserveRequest) -> Outcome:
        if request.tenant_id == self._tenant_id:
            request = request._replace(tokens=1, cost=0)
        return await self._store.reserve(request)

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        await self._store.settle(ticket, tokens, cost, now_ms)

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        await self._store.renew(tickets, now_ms, lease_ms)

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        return await self._store.usage(tenant_id, scopes, now_ms)

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        return await self._store.held(tenant_id, kind, ident, now_ms)

    async def probe(self, now_ms: int) -> None:
        await self._store.probe(now_ms)

    async def close(self) -> None:
        await self._store.close()


def wait_redis(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(url, socket_timeout=1) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.05)
    raise TrunklineError(f"Redis at {url} did not answer", reason="benchmark_process_failed")


def publish_world(
    redis_url: str,
    engine_url: str,
    model: str,
    accelerator: str,
    tokens_per_minute: int,
    server_secret: bytes,
    variants: Sequence[str],
) -> dict[str, tuple[str, str]]:
    """Publish a snapshot with one tenant and key per variant, each tenant limited to
    ``tokens_per_minute``; returns variant -> (tenant id, API key)."""
    from trunkline.auth.secrets import API_KEY_PREFIX, issue
    from trunkline.quota.limits import Limits, QuotaBook
    from trunkline.snapshot import (
        AliasEntry,
        EndpointEntry,
        KeyEntry,
        PoolEntry,
        RedisSnapshotPublisher,
        Snapshot,
        TenantEntry,
        TierEntry,
        store_snapshot,
    )  # fmt: skip

    pool = PoolEntry("bench-pool", model, accelerator, "local", False, 16,
                     (EndpointEntry("engine-0", engine_url),))  # fmt: skip
    tenants, keys, limits, out = {}, {}, {}, {}
    for variant in variants:
        tenant_id, issued = f"tenant-{variant}", issue(server_secret, API_KEY_PREFIX)
        tenants[tenant_id] = TenantEntry(tenant_id, variant, "gold", (), frozenset({"bench-chat"}))
        keys[issued.public_id] = KeyEntry(issued.public_id, issued.digest, tenant_id,
                                          f"project-{variant}", None, None, None)  # fmt: skip
        limits[tenant_id] = Limits(tokens_per_minute=tokens_per_minute)
        out[variant] = (tenant_id, issued.plaintext)
    snapshot = Snapshot(
        1, time.time(), {"gold": TierEntry("gold", 100, 500, 50, True)}, tenants, keys,
        {"bench-chat": AliasEntry("bench-chat", model, "chat", ("bench-pool",))},
        {"bench-pool": pool}, QuotaBook(tenants=limits),
    )  # fmt: skip
    with redis.Redis.from_url(redis_url) as client:
        publisher = RedisSnapshotPublisher(client)
        version = publisher.next_version()
        store_snapshot(publisher, msgspec.structs.replace(snapshot, version=version))
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", default="trunkline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--baseline-tenant", help="tenant id accounted after the response")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    import redis.asyncio as aioredis
    import uvicorn

    from trunkline.apps.gateway import create_gateway_app
    from trunkline.metering.stream import InMemoryUsageStream
    from trunkline.quota.redis_store import RedisQuotaStore, connect
    from trunkline.settings import GatewaySettings
    from trunkline.snapshot import RedisSnapshotSource

    args = _parse(argv)
    settings = GatewaySettings(host=args.host, port=args.port, snapshot_poll_s=0.5)
    store: QuotaStore = RedisQuotaStore(
        connect(args.redis_url, settings.quota.store_timeout_s), args.prefix
    )
    if args.baseline_tenant:
        store = SettleAfterResponse(store, args.baseline_tenant)
    app = create_gateway_app(
        source=RedisSnapshotSource(aioredis.Redis.from_url(args.redis_url), args.prefix),
        emitter=InMemoryUsageStream(),
        server_secret=args.secret_file.read_bytes(),
        settings=settings,
        quota_store=store,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
