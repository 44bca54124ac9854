"""The real Redis is killed and restarted while a gateway serves: it keeps serving under its local
limiter (fail-open), says so, and enforces Redis's exact counts again once Redis is back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import TestClient
from tests.unit.gateway.conftest import SECRET, TENANT_A, default_world
from tests.unit.gateway.upstreams import chat_any

from support.servers import RedisServer, free_port
from trunkline.apps.gateway import create_gateway_app
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.quota.limits import REQUESTS, Limits, QuotaBook
from trunkline.quota.redis_store import RedisQuotaStore, connect
from trunkline.quota.store import ReserveRequest, Scope, StoreUnavailable
from trunkline.settings import GatewaySettings, QuotaSettings
from unit.quota.conftest import NOON, Clock, QuotaWorld
from unit.quota.test_quota_gateway import CHAT


@pytest.fixture
def redis_back(redis_server: RedisServer, redis_url: str) -> Iterator[RedisServer]:
    """The session Redis, started again whatever the test did to it."""
    try:
        yield redis_server
    finally:
        redis_server.start()


def gateway(redis_url: str, clock: Clock, limits: Limits) -> tuple[TestClient[Any], str]:
    base = default_world()
    world = QuotaWorld(base.store, base.tiers, base.tenants, base.keys, base.aliases, base.pools)
    key = world.add_key()
    world.quotas = QuotaBook(keys={key.split("_")[1]: limits})
    world.publish()
    app = create_gateway_app(
        source=world.store,
        emitter=InMemoryUsageStream(),
        server_secret=SECRET,
        settings=GatewaySettings(quota=QuotaSettings(local_share=0.5, probe_every_s=1)),
        transport=httpx.MockTransport(chat_any),
        quota_store=RedisQuotaStore(connect(redis_url, 0.25), prefix="it"),
        clock=clock,
    )
    return TestClient(app), key


def test_redis_killed_and_restarted_during_a_run(redis_back: RedisServer, redis_url: str) -> None:
    clock = Clock(NOON)
    client, key = gateway(redis_url, clock, Limits(requests_per_minute=4))
    headers = {"Authorization": f"Bearer {key}"}

    def statuses(count: int) -> list[int]:
        return [
            client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code
            for _ in range(count)
        ]

    def redis_count() -> int:
        reader = RedisQuotaStore(connect(redis_url, 1.0), prefix="it")
        scope = [("key", key.split("_")[1])]
        [used] = client.blocking_portal.call(reader.usage, TENANT_A, scope, clock())
        client.blocking_portal.call(reader.close)
        return used[REQUESTS]

    with client:
        assert statuses(1) == [200]
        assert redis_count() == 1

        redis_back.kill()
        assert statuses(3) == [200, 200, 429], "served on, at half the limit, per process"
        metrics = client.get("/metrics").text
        assert "trunkline_quota_store_degraded 1.0" in metrics
        assert client.get("/health").json()["quota_store"] == "degraded"

        redis_back.start()  # empty: this Redis keeps no data across a crash
        clock.advance(1000)
        assert statuses(1) == [200], "Redis's own count, from zero"
        client.blocking_portal.call(client.app.state.gateway.quota.store.replayed)
        assert redis_count() == 3, "and the two requests decided locally"
        assert statuses(2) == [200, 429]
        assert "trunkline_quota_store_degraded 0.0" in client.get("/metrics").text
        assert client.get("/health").json()["quota_store"] == "ok"


async def test_a_reserve_that_fails_says_which_reservation_redis_may_hold() -> None:
    """The one retry resends the script after a timeout, and Redis may have run either call:
    the caller gets the ticket to give that reservation back once Redis answers again."""
    store = RedisQuotaStore(connect(f"redis://127.0.0.1:{free_port()}/0", 0.25), prefix="it")
    scopes = (Scope("key", "k", Limits(requests_per_minute=4).vector()),)
    request = ReserveRequest("r1", TENANT_A, scopes, 10, 0, NOON, 60_000, 3_600_000)

    with pytest.raises(StoreUnavailable) as refused:
        await store.reserve(request)

    ticket = refused.value.maybe_reserved
    assert ticket is not None and ticket.request_id == "r1" and ticket.tokens == 10
    assert ticket.reservation_key.endswith(":res:r1")
    await store.close()


@pytest.fixture
def demoted(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session Redis, made a master again whatever the test did to it."""
    client = redis_server.client()
    try:
        yield client
    finally:
        client.replicaof("NO", "ONE")
        client.close()


def test_a_redis_demoted_to_a_replica_is_an_outage_not_a_500(
    demoted: redis.Redis, redis_url: str
) -> None:
    """After a failover the gateway may still talk to the old master, now a read-only replica
    that refuses every script: serve on under the local limiter, as when Redis is down."""
    clock = Clock(NOON)
    client, key = gateway(redis_url, clock, Limits(requests_per_minute=4))
    headers = {"Authorization": f"Bearer {key}"}
    with client:
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200

        demoted.replicaof("127.0.0.1", str(free_port()))
        served = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert served.status_code == 200, served.text
        assert client.get("/health").json()["quota_store"] == "degraded"

        demoted.replicaof("NO", "ONE")
        clock.advance(1000)
        assert client.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
        assert client.get("/health").json()["quota_store"] == "ok"


async def test_the_probe_is_a_write_a_demoted_redis_refuses(
    demoted: redis.Redis, redis_url: str
) -> None:
    """A PING answers on a read-only replica: the probe that ends an outage must be a write."""
    store = RedisQuotaStore(connect(redis_url, 2.0), prefix="probe-test")
    await store.probe(NOON)
    demoted.replicaof("127.0.0.1", str(free_port()))
    with pytest.raises(StoreUnavailable):
        await store.probe(NOON)
    demoted.replicaof("NO", "ONE")
    await store.probe(NOON)
    await store.close()
