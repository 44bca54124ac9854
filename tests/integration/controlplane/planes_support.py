"""Two control planes on one database and one Redis, as HA runs them behind a load balancer:
``a``, through which changes are made, and ``b``, whose checks the tests count (the ``planes``
fixture, registered by this directory's conftest)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import TestClient

from trunkline.apps import change_publisher, config_state, publishing
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.publish_metrics import Check
from trunkline.apps.publishing import check_published
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key, key_tenant, revoke_key
from trunkline.snapshot import RedisSnapshotPublisher, RedisSnapshotSource, Snapshot, read_snapshot
from trunkline.snapshot.builder import current_digest
from trunkline.snapshot.store import Patched
from trunkline.tenancy.changes import Change, unit_of_work
from trunkline.tenancy.schemas import TenantUpdate
from trunkline.tenancy.service import update_tenant
from unit.controlplane.cp_support import build_world

PREFIX = "planes"
SYSTEM = Principal.system()


@dataclasses.dataclass
class Planes:
    """Control plane ``a``, through which changes are made, and ``b``, whose checks are
    counted: ``builds`` holds one entry per snapshot ``b``'s checks built."""

    a: Runtime
    b: Runtime
    client: redis.Redis
    url: str
    tenant: uuid.UUID
    project: uuid.UUID
    builds: list[int] = dataclasses.field(default_factory=list)
    now: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))

    def change(self, body: Callable[[Any], Any], *, published: bool = True) -> Any:
        """``body`` committed through ``a``; not ``published``: its publish did not reach the
        store (Redis away for ``a`` then)."""

        def publish(change: Change) -> None:
            if published:
                self.a.publish(change)

        with unit_of_work(self.a.session_factory, publish) as session:
            return body(session)

    def create(self, **fields: Any) -> str:
        data = ApiKeyCreate(project_id=self.project, name="key", **fields)
        made = self.change(lambda s: create_key(s, SYSTEM, self.a.server_secret, self.tenant, data))
        return str(made.key.key_id)

    def revoke(self, key_id: str, *, published: bool = True) -> None:
        def body(session: Any) -> None:
            revoke_key(session, SYSTEM, key_tenant(session, key_id), key_id)

        self.change(body, published=published)

    def retier(self, tier: str, *, published: bool = True) -> None:
        update = TenantUpdate(tier=tier)
        self.change(lambda s: update_tenant(s, self.tenant, update), published=published)

    def check(self, *, thorough: bool = False) -> Check:
        return check_published(self.b, thorough=thorough)

    def served(self) -> Snapshot:
        """What a gateway started now would serve."""
        source = RedisSnapshotSource(aioredis.Redis.from_url(self.url), PREFIX)
        found = asyncio.run(read_snapshot(source))
        assert found is not None
        return found


@pytest.fixture
def planes(runtime: Runtime, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Planes]:
    client = redis.Redis.from_url(redis_url)
    runtime.publisher, runtime.memory_store = RedisSnapshotPublisher(client, PREFIX), None
    with TestClient[Any](create_controlplane_app(runtime)) as http:
        world = build_world(runtime, http)
        project = uuid.UUID(world.project("acme", "demo"))
    other = build_runtime(runtime.settings)
    other = dataclasses.replace(other, publisher=RedisSnapshotPublisher(client, PREFIX))
    planes = Planes(runtime, other, client, redis_url, uuid.UUID(world.tenant("acme")), project)

    def counted(factory: Any, **kwargs: Any) -> bytes:
        if factory is other.session_factory:
            planes.builds.append(1)
        return current_digest(factory, **kwargs)

    monkeypatch.setattr(publishing, "current_digest", counted)
    monkeypatch.setattr(change_publisher, "utcnow", lambda: planes.now)
    monkeypatch.setattr(config_state, "utcnow", lambda: planes.now)
    monkeypatch.setattr(publishing, "utcnow", lambda: planes.now)
    other.publish()  # at its start, as every control plane does
    try:
        yield planes
    finally:
        other.close()
        client.close()


def samples(runtime: Runtime, name: str, **labels: str) -> float:
    return sum(
        s.value
        for metric in runtime.metrics.collect()
        for s in metric.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@contextmanager
def refusing(runtime: Runtime) -> Iterator[None]:
    """Every write ``runtime`` makes to the store is refused (other control planes storing
    newer versions first, each time), until the block ends."""
    publisher = runtime.publisher
    assert isinstance(publisher, RedisSnapshotPublisher)
    real_patch, real_publish = publisher.patch, publisher.publish
    publisher.patch = lambda *_a, **_k: Patched.REFUSED  # type: ignore[method-assign]
    publisher.publish = lambda *_a, **_k: False  # type: ignore[method-assign]
    try:
        yield
    finally:
        publisher.patch, publisher.publish = real_patch, real_publish  # type: ignore[method-assign]
