"""A gateway with quotas: hand-built snapshot, scripted engines, an injected clock; and a
control plane over the shipped tenants/ whose quota usage reads an in-memory store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from tests.unit.gateway.conftest import SECRET, TENANT_A, World, default_world
from tests.unit.gateway.upstreams import chat_any

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.gateway import create_gateway_app
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.quota.limits import Limits, Price, QuotaBook
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.rules import Vector
from trunkline.quota.store import QuotaStore
from trunkline.settings import GatewaySettings, QuotaSettings
from trunkline.snapshot import Snapshot, store_snapshot
from unit.controlplane import cp_support

Handler = Callable[[httpx.Request], httpx.Response]


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


class Clock:
    """Epoch milliseconds that move only when a test says so."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, delta_ms: int) -> None:
        self.now_ms += delta_ms


@dataclass
class QuotaWorld(World):
    quotas: QuotaBook = field(default_factory=QuotaBook)

    def publish(self) -> None:
        version = self.store.next_version()
        snapshot = Snapshot(
            version, time.time(), self.tiers, self.tenants, self.keys, self.aliases, self.pools,
            self.quotas,
        )  # fmt: skip
        store_snapshot(self.store, snapshot)


@dataclass
class Gateway:
    client: TestClient[Any]
    world: QuotaWorld
    usage: InMemoryUsageStream
    upstream: list[httpx.Request]
    clock: Clock
    store: QuotaStore
    key: str

    @property
    def key_id(self) -> str:
        return self.key.split("_")[1]

    @property
    def service(self) -> GatewayService:
        service: GatewayService = self.client.app.state.gateway
        return service

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a coroutine function on the app's event loop."""
        return self.client.blocking_portal.call(fn, *args)

    def limit(
        self,
        key: Limits | None = None,
        tenant: Limits | None = None,
        project: Limits | None = None,
        prices: dict[str, Price] | None = None,
    ) -> None:
        """Publish these limits and make the gateway load them (no waiting on its poll)."""
        self.world.quotas = QuotaBook(
            tenants={TENANT_A: tenant} if tenant else {},
            projects={TENANT_A: project} if project else {},
            keys={self.key_id: key} if key else {},
            prices=prices or {},
        )
        self.world.publish()
        self.call(self.service.holder.refresh)

    def post(self, body: dict[str, Any], path: str = "/v1/chat/completions") -> httpx.Response:
        response = self.client.post(path, json=body, headers=self.auth)
        self.call(self.service.quota.drain)
        return response

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def counters(self, kind: str = "key", ident: str | None = None) -> Vector:
        ident = ident or {"key": self.key_id, "tenant": TENANT_A}[kind]
        [used] = self.call(self.store.usage, TENANT_A, [(kind, ident)], self.clock())
        return used  # type: ignore[no-any-return]


NOON = ms(2027, 6, 15, 12, 0, 0)


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    clients: list[TestClient[Any]] = []

    def build(
        handler: Handler = chat_any,
        *,
        now_ms: int = NOON,
        store: QuotaStore | None = None,
        **quota: Any,
    ) -> Gateway:
        base = default_world()
        world = QuotaWorld(
            base.store, base.tiers, base.tenants, base.keys, base.aliases, base.pools
        )
        key = world.add_key()
        world.publish()
        seen: list[httpx.Request] = []

        def recording(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        clock, usage = Clock(now_ms), InMemoryUsageStream()
        store = store or InMemoryQuotaStore()
        app = create_gateway_app(
            source=world.store,
            emitter=usage,
            server_secret=SECRET,
            settings=GatewaySettings(snapshot_poll_s=60, quota=QuotaSettings(**quota)),
            transport=httpx.MockTransport(recording),
            quota_store=store,
            clock=clock,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Gateway(client, world, usage, seen, clock, store, key)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def store() -> InMemoryQuotaStore:
    return InMemoryQuotaStore()


@pytest.fixture
def world(tmp_path: Path, store: InMemoryQuotaStore) -> Iterator[cp_support.World]:
    """The control plane, its quota usage read from ``store``."""
    runtime = cp_support.make_runtime(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path / "state")
    with TestClient[Any](create_controlplane_app(runtime, quota_store=store)) as client:
        yield cp_support.build_world(runtime, client)
    runtime.close()
