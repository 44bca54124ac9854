"""What a Redis that accepts connections but never answers (SIGSTOP'd) must not hold in the
control plane's writes, and that a key revoked meanwhile reaches the store once it answers."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from integration.stores.test_snapshot_store_frozen import (
    DEADLINE_S,
    _frozen,
    _stored_keys,
    production_like_on,
)
from support.servers import RedisServer
from trunkline.apps.controlplane import create_controlplane_app, default_quota_store
from trunkline.apps.runtime import Runtime
from trunkline.quota.store import QuotaStore
from unit.controlplane.cp_support import build_world

pytestmark = pytest.mark.integration


class SeenUsage:
    """The control plane's own quota store (what ``create_controlplane_app`` builds), saying
    when a request started reading usage from it."""

    def __init__(self, store: QuotaStore) -> None:
        self._store, self.reading = store, threading.Event()

    async def usage(self, tenant_id: str, scopes: Sequence[tuple[str, str]], now: int) -> Any:
        self.reading.set()
        return await self._store.usage(tenant_id, scopes, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def production_like(database_url: str, tmp_path: Path) -> Iterator[tuple[RedisServer, Runtime]]:
    """As ``test_snapshot_store_frozen``'s, on SQLite and PostgreSQL."""
    with production_like_on(database_url, tmp_path) as built:
        yield built


def test_a_quota_write_on_a_frozen_redis_does_not_hold_a_key_revocation_behind_it(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    """A tenant's quota PUT reads its usage from Redis: inside its transaction, which holds the
    configuration's lock (``hold_config``) that every write takes first, it held the lock for
    the quota store's 5 s timeout on a frozen Redis, and a key revocation sent meanwhile was
    answered only after it. It reads usage after its commit, and says it has none."""
    server, runtime = production_like
    quota = SeenUsage(default_quota_store(runtime.settings))
    app = create_controlplane_app(runtime, quota_store=quota)
    with TestClient[Any](app) as http, concurrent.futures.ThreadPoolExecutor(2) as pool:
        world = build_world(runtime, http)
        acme = world.tenant("acme")
        key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        assert key_id in _stored_keys(server.url)
        with _frozen(server):
            quota_put = pool.submit(
                world.admin.put, f"/api/v1/tenants/{acme}/quota", {"tenant": {"cost_per_month": 50}}
            )
            assert quota.reading.wait(10), "the quota PUT never read its usage"
            revoke = pool.submit(
                world.api("acme-admin").post,
                f"/api/v1/tenants/{acme}/keys/{key_id}/revoke",
                expect=200,
            )
            done, _ = concurrent.futures.wait(
                [quota_put, revoke], return_when=concurrent.futures.FIRST_COMPLETED
            )
            # Before a fix: the revocation waits for the quota PUT's usage read to time out.
            assert revoke in done and not quota_put.done(), "the revocation waited behind it"
            assert quota_put.result()["usage"] is None  # as a GET's while Redis is away
        revoke.result()


def test_a_key_revoked_while_redis_is_frozen_is_out_of_the_store_once_it_answers(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    """The revocation's publish is left to the check (the store failed a call), and the
    check's first round after the thaw publishes it: the invariant the merge must keep."""
    server, runtime = production_like
    with TestClient[Any](create_controlplane_app(runtime, snapshot_check_s=0.05)) as http:
        world = build_world(runtime, http)
        acme = world.tenant("acme")
        keys = [world.create_key("acme-admin", "acme", "demo")["key"]["key_id"] for _ in "ab"]
        assert set(keys) <= _stored_keys(server.url)
        with _frozen(server):
            for key_id in keys:  # the first waits for the timeout, the second not
                revoked = f"/api/v1/tenants/{acme}/keys/{key_id}/revoke"
                world.api("acme-admin").post(revoked, expect=200)
            assert runtime.outage.suspected()
        deadline = time.monotonic() + DEADLINE_S  # the check's next round publishes them
        while set(keys) & _stored_keys(server.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(keys) & _stored_keys(server.url), "a revoked key is still in the store"
