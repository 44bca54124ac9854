"""What a Redis that accepts connections but never answers (SIGSTOP'd) must not hold in the
control plane's writes, and that a key revoked meanwhile reaches the store once it answers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from integration.stores.test_snapshot_store_frozen import (
    DEADLINE_S,
    TIMED_OUT,
    _frozen,
    _stored_keys,
    production_like_on,
)
from support.servers import RedisServer
from trunkline.apps.controlplane import create_controlplane_app, default_quota_store
from trunkline.apps.publishing import republish_if_stale
from trunkline.apps.runtime import Runtime
from trunkline.quota.store import QuotaStore
from unit.controlplane.cp_support import build_world

pytestmark = pytest.mark.integration

T = "/api/v1/tenants"


class SeenUsage:
    """The control plane's own quota store (what ``create_controlplane_app`` builds), counting
    its usage reads and saying when one started; a ``held`` one waits until ``released`` (a
    Redis that stops answering between a quota PUT's publish and its usage read)."""

    def __init__(self, store: QuotaStore, *, held: bool = False) -> None:
        self._store, self.reading, self.reads = store, threading.Event(), 0
        self.released = threading.Event()
        if not held:
            self.released.set()

    async def usage(self, tenant_id: str, scopes: Sequence[tuple[str, str]], now: int) -> Any:
        self.reads += 1
        self.reading.set()
        await asyncio.to_thread(self.released.wait, DEADLINE_S)
        return await self._store.usage(tenant_id, scopes, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def production_like(database_url: str, tmp_path: Path) -> Iterator[tuple[RedisServer, Runtime]]:
    """As ``test_snapshot_store_frozen``'s, on SQLite and PostgreSQL."""
    with production_like_on(database_url, tmp_path) as built:
        yield built


def test_a_quota_write_waiting_on_redis_for_usage_does_not_hold_a_key_revocation_behind_it(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    """A tenant's quota PUT reads its usage from Redis: inside its transaction, which holds the
    configuration's lock (``hold_config``) that every write takes first, it held the lock for
    the quota store's 5 s timeout on a frozen Redis, and a key revocation sent meanwhile was
    answered only after it. It reads usage after its commit. The read is held by the test: on a
    Redis frozen before the PUT, its publish finds Redis away and the read is not tried (the
    next test), so only a Redis that stops answering in between holds a read."""
    server, runtime = production_like
    quota = SeenUsage(default_quota_store(runtime.settings), held=True)
    app = create_controlplane_app(runtime, quota_store=quota)
    with TestClient[Any](app) as http, concurrent.futures.ThreadPoolExecutor(2) as pool:
        world = build_world(runtime, http)
        acme = world.tenant("acme")
        key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        quota_put = pool.submit(
            world.admin.put, f"{T}/{acme}/quota", {"tenant": {"cost_per_month": 50}}
        )
        assert quota.reading.wait(DEADLINE_S), "the quota PUT never read its usage"
        revoke = pool.submit(
            world.api("acme-admin").post, f"{T}/{acme}/keys/{key_id}/revoke", expect=200
        )
        done, _ = concurrent.futures.wait(
            [quota_put, revoke], timeout=DEADLINE_S, return_when=concurrent.futures.FIRST_COMPLETED
        )
        # Before a fix: the revocation waits for the quota PUT's usage read to end.
        assert revoke in done and not quota_put.done(), "the revocation waited behind it"
        assert key_id not in _stored_keys(server.url)
        quota.released.set()
        assert quota_put.result()["usage"] is not None


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


OUTAGE_LOG = "trunkline.apps.store_outage"


def test_a_quota_put_after_a_write_found_redis_frozen_does_not_wait_on_it_again(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    """The quota endpoints kept an outage tracker of their own: on the Redis a key revocation's
    publish had just found frozen (2 s), a quota PUT read usage from it all the same, and
    waited 2 s more for that read's timeout."""
    server, runtime = production_like
    quota = SeenUsage(default_quota_store(runtime.settings))
    app = create_controlplane_app(runtime, quota_store=quota, snapshot_check_s=3600)
    with TestClient[Any](app) as http:
        world = build_world(runtime, http)
        acme = world.tenant("acme")
        key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        with _frozen(server):
            world.api("acme-admin").post(f"{T}/{acme}/keys/{key_id}/revoke", expect=200)
            assert runtime.outage.suspected()  # its publish timed out
            asked = quota.reads
            view = world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month": 50}})
            assert view["usage"] is None and view["limits"]["tenant"]["cost_per_month"] == 50
            assert quota.reads == asked, "the quota PUT read usage from the frozen Redis"


def test_an_outage_a_usage_read_found_is_known_to_the_publishes_and_logged_once(
    production_like: tuple[RedisServer, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    """A quota GET's usage read found Redis frozen: the key revocation after it is answered
    without its publish waiting for a timeout of its own (left to the check), the outage's
    start and end are logged once for both, and once a call answers, usage shows again."""
    server, runtime = production_like
    caplog.set_level(logging.INFO)
    with TestClient[Any](create_controlplane_app(runtime, snapshot_check_s=3600)) as http:
        world = build_world(runtime, http)
        acme = world.tenant("acme")
        key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        with _frozen(server):
            assert world.api("acme-admin").get(f"{T}/{acme}/quota")["usage"] is None
            assert runtime.outage.suspected()
            world.api("acme-admin").post(f"{T}/{acme}/keys/{key_id}/revoke", expect=200)
            timed_out = [r for r in caplog.records if TIMED_OUT in r.getMessage()]
            assert not timed_out, "the revocation's publish waited on the frozen Redis"
        assert republish_if_stale(runtime)  # the check's next round: Redis answers
        assert key_id not in _stored_keys(server.url)
        assert world.api("acme-admin").get(f"{T}/{acme}/quota")["usage"] is not None
    said = [r.getMessage() for r in caplog.records if r.name == OUTAGE_LOG]
    assert len(said) == 2, said
    assert said[0].startswith("Redis failed a call (") and "usage: null" in said[0]
    assert said[1] == "Redis answers again"
