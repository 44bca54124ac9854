"""A quota set through the control-plane API reaches every gateway replica through the snapshot
(published to Redis, polled by each gateway) within the 2 s the platform promises."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from litestar.testing import TestClient
from tests.unit.gateway.upstreams import chat_any

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.gateway import create_gateway_app
from trunkline.apps.runtime import build_runtime
from trunkline.kit.migrate import upgrade
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.quota.redis_store import RedisQuotaStore, connect
from trunkline.settings import GatewaySettings, RedisSettings
from trunkline.snapshot import RedisSnapshotSource
from unit.controlplane.cp_support import World, build_world, make_settings
from unit.quota.test_quota_gateway import CHAT

GUARANTEE_S = 2.0
BODY = {**CHAT, "model": "llama-3.1-8b"}  # an alias of the shipped catalog


@pytest.fixture
def platform(tmp_path: Path, redis_url: str) -> Iterator[tuple[World, list[TestClient[Any]]]]:
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    upgrade(url)
    settings = make_settings(url, tmp_path / "state")
    settings.redis = RedisSettings(url=redis_url)
    runtime = build_runtime(settings)
    with ExitStack() as stack:
        cp = stack.enter_context(TestClient[Any](create_controlplane_app(runtime)))
        world = build_world(runtime, cp)
        gateways = [
            stack.enter_context(TestClient[Any](replica(redis_url, runtime.server_secret)))
            for _ in range(2)
        ]
        yield world, gateways
    runtime.close()


def replica(redis_url: str, secret: bytes) -> Any:
    return create_gateway_app(
        source=RedisSnapshotSource(aioredis.Redis.from_url(redis_url)),
        emitter=InMemoryUsageStream(),
        server_secret=secret,
        settings=GatewaySettings(snapshot_poll_s=0.5),
        transport=httpx.MockTransport(chat_any),
        quota_store=RedisQuotaStore(connect(redis_url, 0.25)),
    )


def limit_seen(gateway: TestClient[Any], key: str) -> str | None:
    response = gateway.post(
        "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}
    )
    return response.headers.get("x-ratelimit-limit-requests")


def wait_for(check: Callable[[], bool], within_s: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, f"not seen within {within_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_key_quota_set_through_the_api_reaches_every_replica(
    platform: tuple[World, list[TestClient[Any]]],
) -> None:
    world, gateways = platform
    world.admin.put("/api/v1/catalog/pools/h100-eu-west/endpoints", {"urls": ["http://engine-1"]})
    key = world.create_key("acme-dev", "acme", "demo")
    for gateway in gateways:
        wait_for(lambda g=gateway: limit_seen(g, key["secret"]) == "1200", 10)  # gold's default

    acme = world.tenant("acme")
    path = f"/api/v1/tenants/{acme}/keys/{key['key']['key_id']}/quota"
    world.api("acme-admin").put(path, {"requests_per_minute": 7})
    changed_at = time.monotonic()

    for gateway in gateways:
        wait_for(lambda g=gateway: limit_seen(g, key["secret"]) == "7", GUARANTEE_S)
    assert time.monotonic() - changed_at < GUARANTEE_S
