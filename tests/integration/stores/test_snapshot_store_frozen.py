"""A Redis that accepts connections but does not answer (a SIGSTOP'd redis-server, as a frozen
host or a blackholed socket would be): the control plane's API writes are committed and
answered without each waiting for the client's timeout, ``/healthz`` says the gateways'
configuration is out of sync, and what was written reaches the store once it answers."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar.testing import TestClient

from integration.stores.test_snapshot_republish import _wait_for_sync
from support.servers import RedisServer, start_redis
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.errors import ConfigurationError
from trunkline.kit.migrate import upgrade
from trunkline.settings import RedisSettings
from trunkline.snapshot import RedisSnapshotSource, read_snapshot
from unit.controlplane.cp_support import World, build_world, make_settings

pytestmark = pytest.mark.integration

DEADLINE_S = 20.0
TIMED_OUT = "could not be published"
"""What a publish that waited on the store and failed logs (one a write, before)."""


@contextmanager
def _frozen(server: RedisServer) -> Iterator[None]:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


def _stored_keys(url: str) -> set[str]:
    async def load() -> set[str]:
        client = aioredis.Redis.from_url(url, socket_timeout=5)
        try:
            found = await read_snapshot(RedisSnapshotSource(client, "trunkline"))
        finally:
            await client.aclose()
        assert found is not None
        return set(found.keys)

    return asyncio.run(load())


@contextmanager
def production_like_on(url: str, tmp_path: Path) -> Iterator[tuple[RedisServer, Runtime]]:
    """A Redis of its own (frozen by the test) and the runtime production builds over it and
    the database at ``url``."""
    server = start_redis(tmp_path)
    try:  # a database that refuses the upgrade must not leave this Redis running
        upgrade(url)
        settings = make_settings(url, tmp_path / "state")
        settings.redis = RedisSettings(url=server.url)
        runtime = build_runtime(settings)
        try:
            yield server, runtime
        finally:
            runtime.close()
    finally:
        server.destroy()


@pytest.fixture
def production_like(tmp_path: Path) -> Iterator[tuple[RedisServer, Runtime]]:
    with production_like_on(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path) as built:
        yield built


def test_production_like_stops_its_redis_when_the_database_cannot_be_upgraded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper started its Redis, then the upgrade raised and the server ran on, orphaned."""
    started: list[RedisServer] = []
    start = start_redis

    def recorded(path: Path) -> RedisServer:
        started.append(start(path))
        return started[-1]

    monkeypatch.setitem(globals(), "start_redis", recorded)
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"  # nothing listens there
    with pytest.raises(ConfigurationError), production_like_on(unreachable, tmp_path):
        pass  # pragma: no cover - the upgrade fails before anything is yielded
    (server,) = started
    if server.is_running():
        server.destroy()  # the test's own cleanup, so a failure leaks nothing either
        pytest.fail("the Redis started for the runtime is still running")


def _new_key(world: World) -> str:
    key_id: str = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    return key_id


def test_writes_while_redis_is_frozen_do_not_each_wait_for_it_and_reach_it_once_it_answers(
    production_like: tuple[RedisServer, Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    server, runtime = production_like
    caplog.set_level(logging.WARNING, logger="trunkline.apps.runtime")
    with TestClient[Any](create_controlplane_app(runtime, snapshot_check_s=0.05)) as http:
        world = build_world(runtime, http)
        assert _new_key(world) in _stored_keys(server.url)  # read-your-writes, Redis answering
        with _frozen(server):
            written = {_new_key(world) for _ in range(3)}  # each answered 201: committed
            timed_out = [r for r in caplog.records if TIMED_OUT in r.getMessage()]
            # Before: every write's publish waited for the socket timeout (5 s) in turn.
            assert len(timed_out) <= 1, [r.getMessage() for r in timed_out]
            assert _wait_for_sync(http, in_sync=False)["snapshot"]["error"] == "TimeoutError"
        deadline = time.monotonic() + DEADLINE_S  # no write since: the check publishes them
        while not written <= _stored_keys(server.url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert written <= _stored_keys(server.url), "the gateways never learn the keys"
        _wait_for_sync(http, in_sync=True)
        assert _new_key(world) in _stored_keys(server.url)  # read-your-writes again
