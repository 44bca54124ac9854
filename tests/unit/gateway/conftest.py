"""A gateway wired to an in-memory snapshot and an upstream given per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from trunkline.apps.gateway import create_gateway_app
from trunkline.auth.secrets import API_KEY_PREFIX, issue
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    InMemorySnapshotStore,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
    store_snapshot,
)

SECRET = b"unit-test-server-secret-of-enough-length"
TENANT_A = "00000000-0000-0000-0000-00000000000a"
TENANT_B = "00000000-0000-0000-0000-00000000000b"
PROJECT_A = "00000000-0000-0000-0000-0000000000a1"


@dataclass
class World:
    """Snapshot contents a test can edit, then publish."""

    store: InMemorySnapshotStore
    tiers: dict[str, TierEntry]
    tenants: dict[str, TenantEntry]
    keys: dict[str, KeyEntry]
    aliases: dict[str, AliasEntry]
    pools: dict[str, PoolEntry]

    def publish(self) -> None:
        version = self.store.next_version()
        snapshot = Snapshot(
            version, time.time(), self.tiers, self.tenants, self.keys, self.aliases, self.pools
        )
        store_snapshot(self.store, snapshot)

    def add_key(
        self,
        tenant_id: str = TENANT_A,
        *,
        allowed: frozenset[str] | None = None,
        expires_at: float | None = None,
    ) -> str:
        issued = issue(SECRET, API_KEY_PREFIX)
        self.keys[issued.public_id] = KeyEntry(
            issued.public_id, issued.digest, tenant_id, PROJECT_A, allowed, None, expires_at
        )
        return issued.plaintext


def default_world() -> World:
    gold = TierEntry("gold", 100, 500, 50, True)
    pools = {
        "h100-eu": PoolEntry(
            "h100-eu",
            "llama-8b-served",
            "h100",
            "eu-west",
            False,
            16,
            (EndpointEntry("e1", "http://engine-1"), EndpointEntry("e2", "http://engine-2")),
        ),
        "l40s-us": PoolEntry(
            "l40s-us",
            "llama-8b-served",
            "l40s",
            "us-east",
            False,
            16,
            (EndpointEntry("e3", "http://engine-3"),),
        ),
        "embed": PoolEntry(
            "embed",
            "bge-served",
            "l40s",
            "eu-west",
            False,
            16,
            (EndpointEntry("e4", "http://engine-4"),),
        ),
    }
    aliases = {
        "llama": AliasEntry("llama", "llama-8b-served", "chat", ("h100-eu", "l40s-us")),
        "bge": AliasEntry("bge", "bge-served", "embedding", ("embed",)),
        "secret-model": AliasEntry("secret-model", "llama-8b-served", "chat", ("h100-eu",)),
    }
    tenants = {
        TENANT_A: TenantEntry(TENANT_A, "acme", "gold", (), frozenset({"llama", "bge"})),
        TENANT_B: TenantEntry(
            TENANT_B, "globex", "gold", ("eu-west",), frozenset({"llama", "secret-model"})
        ),
    }
    return World(InMemorySnapshotStore(), {"gold": gold}, tenants, {}, aliases, pools)


Handler = Callable[[httpx.Request], httpx.Response]


def gateway_app(
    world: World,
    usage: InMemoryUsageStream,
    settings: GatewaySettings | None = None,
    **app_options: Any,
) -> Litestar:
    """A gateway app over ``world``'s snapshot store, metering into ``usage``; ``app_options``
    go to ``create_gateway_app``. The snapshot is polled every 50 ms unless ``settings`` says."""
    return create_gateway_app(
        source=world.store,
        emitter=usage,
        server_secret=SECRET,
        settings=settings or GatewaySettings(snapshot_poll_s=0.05),
        **app_options,
    )


@dataclass
class Harness:
    client: TestClient  # type: ignore[type-arg]
    world: World
    usage: InMemoryUsageStream
    upstream: list[httpx.Request]

    def drain_usage(self) -> list:  # type: ignore[type-arg]
        batch = self.usage.read(10_000)
        self.usage.ack([message_id for message_id, _record in batch])
        return [record for _message_id, record in batch]


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Harness]]:
    """Builds a gateway app over ``world`` (published first) whose engines are ``handler``.

    ``settings`` replaces the default settings (``max_body`` then has no effect); other keyword
    arguments go to ``create_gateway_app`` (``scrape_transport``, ``admission``...).
    """
    clients: list[TestClient] = []  # type: ignore[type-arg]

    def build(
        handler: Handler,
        world: World | None = None,
        max_body: int = 64 * 1024,
        *,
        settings: GatewaySettings | None = None,
        **app_options: Any,
    ) -> Harness:
        world = world or default_world()
        world.publish()
        seen: list[httpx.Request] = []

        def recording(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        usage = InMemoryUsageStream()
        app = gateway_app(
            world,
            usage,
            settings or GatewaySettings(max_body_bytes=max_body, snapshot_poll_s=0.05),
            transport=httpx.MockTransport(recording),
            **app_options,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Harness(client, world, usage, seen)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def engine_gateway(make_gateway: Callable[..., Harness]) -> Callable[..., Any]:
    """Builds a gateway over scripted engines with engine state (``engines_support.Gateway``)."""
    from tests.unit.gateway.engines_support import engine_gateways

    return engine_gateways(make_gateway)
