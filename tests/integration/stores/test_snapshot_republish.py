"""The control plane publishes the snapshot again when Redis lost it (restarted without its
data), or when a change committed while Redis was away: gateways load it instead of waiting
for the next config change."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import TestClient
from sqlalchemy import update

from support.servers import start_redis
from trunkline.apps import publishing
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.publishing import republish_if_stale
from trunkline.apps.runtime import build_runtime
from trunkline.auth.principal import Principal
from trunkline.keys.service import key_tenant, revoke_key
from trunkline.models import ApiKey
from trunkline.snapshot import RedisSnapshotPublisher, RedisSnapshotSource, read_snapshot
from trunkline.snapshot.builder import current_digest
from trunkline.snapshot.parts import shard_name
from trunkline.tenancy.changes import config_generation, unit_of_work
from unit.controlplane.cp_support import build_world, make_runtime, make_settings

PREFIX = "republish"


def _wipe(client: redis.Redis) -> None:
    """What a Redis restarted without its data holds of the prefix: nothing."""
    client.delete(*client.keys(f"{PREFIX}:*"))


def test_a_lost_snapshot_is_published_again_and_newer_than_the_one_before(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    runtime = make_runtime(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path / "state")
    runtime = dataclasses.replace(runtime, publisher=RedisSnapshotPublisher(client, PREFIX))
    try:
        app = create_controlplane_app(runtime, snapshot_check_s=0.05)
        with TestClient[Any](app) as http:
            build_world(runtime, http)
            before = runtime.publisher.published_version()
            assert before is not None
            assert not republish_if_stale(runtime)  # held: nothing to do
            _wipe(client)  # Redis restarted empty
            deadline = time.monotonic() + 10
            while runtime.publisher.published_version() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            after = runtime.publisher.published_version()
        assert after is not None and after > before, "gateways would take it for the old one"
        loaded = asyncio.run(_load(redis_url))
        assert "acme" in {tenant.slug for tenant in loaded.tenants.values()}
    finally:
        _wipe(client)
        client.close()
        runtime.close()


@contextlib.contextmanager
def _publishing_a_key(redis_url: str, tmp_path: Path) -> Iterator[tuple[redis.Redis, Any, str]]:
    """A control plane publishing to Redis, the example world and one key created."""
    client = redis.Redis.from_url(redis_url)
    runtime = make_runtime(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path / "state")
    runtime = dataclasses.replace(runtime, publisher=RedisSnapshotPublisher(client, PREFIX))
    try:
        with TestClient[Any](create_controlplane_app(runtime)) as http:
            world = build_world(runtime, http)
            key_id = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
        yield client, runtime, key_id
    finally:
        _wipe(client)
        client.close()
        runtime.close()


def test_a_part_lost_from_redis_is_published_again_by_the_next_check(
    redis_url: str, tmp_path: Path
) -> None:
    """A shard evicted or deleted by hand: the store's digest still matched the database, so
    the check republished nothing and every gateway started since stayed without keys."""
    with _publishing_a_key(redis_url, tmp_path) as (client, runtime, key_id):
        assert not republish_if_stale(runtime)  # held whole: nothing to do
        client.delete(f"{PREFIX}:snapshot:v2:part:{shard_name(key_id)}")
        assert republish_if_stale(runtime)  # not only on the thorough round
        assert key_id in asyncio.run(_load(redis_url)).keys


def test_a_redis_restored_from_a_backup_is_published_to_again_by_the_next_check(
    redis_url: str, tmp_path: Path
) -> None:
    """Redis back from a backup held a whole, older snapshot: the check saw it whole and left
    it until its thorough round, a minute, while gateways started meanwhile accepted a key
    revoked since the backup."""
    with _publishing_a_key(redis_url, tmp_path) as (client, runtime, key_id):
        backup = {name: client.dump(name) for name in client.keys(f"{PREFIX}:*")}
        with unit_of_work(runtime.session_factory, runtime.publish) as session:
            revoke_key(session, Principal.system(), key_tenant(session, key_id), key_id)
        assert key_id not in asyncio.run(_load(redis_url)).keys
        _wipe(client)
        for name, dumped in backup.items():
            client.restore(name, 0, dumped)
        assert key_id in asyncio.run(_load(redis_url)).keys  # what a new gateway would serve
        assert republish_if_stale(runtime)  # not only on the thorough round
        assert key_id not in asyncio.run(_load(redis_url)).keys
        assert not republish_if_stale(runtime)  # and once is enough


def test_the_check_builds_only_after_a_change_and_repeats_no_other_process_s_publish(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It built the whole snapshot every 2 s (a second of CPU at 40,000 keys), and published
    again every change ``trunkline keys revoke`` had published from another process (which,
    since, costs it no build either)."""
    client = redis.Redis.from_url(redis_url)
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    publisher = RedisSnapshotPublisher(client, PREFIX)
    runtime = dataclasses.replace(make_runtime(url, tmp_path / "state"), publisher=publisher)
    cli = dataclasses.replace(
        build_runtime(make_settings(url, tmp_path / "state")), publisher=publisher
    )
    builds: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> bytes:
        builds.append(1)
        return current_digest(*args, **kwargs)

    monkeypatch.setattr(publishing, "current_digest", counted)
    try:
        with TestClient[Any](create_controlplane_app(runtime)) as http:
            world = build_world(runtime, http)
            kept, revoked, edited = (
                world.create_key("acme-admin", "acme", "demo")["key"]["key_id"] for _ in range(3)
            )
        for _ in range(3):
            assert not republish_if_stale(runtime)
        assert builds == []  # nothing changed since it published

        with cli.session_factory() as session:
            generation = config_generation(session)
        with unit_of_work(cli.session_factory, cli.publish) as session:
            revoke_key(session, Principal.system(), key_tenant(session, revoked), revoked)
        with cli.session_factory() as session:
            assert config_generation(session) == generation + 1
        version = publisher.published_version()
        # no build: the store says its version was built from the state the database is in
        assert not republish_if_stale(runtime)
        assert builds == [] and publisher.published_version() == version

        with runtime.session_factory() as session, session.begin():  # by hand, not counted
            session.execute(
                update(ApiKey).where(ApiKey.key_id == edited).values(revoked_at=datetime.now(UTC))
            )
        assert not republish_if_stale(runtime)
        assert republish_if_stale(runtime, thorough=True)  # the check every minute finds it
        keys = set(asyncio.run(_load(redis_url)).keys)
        assert kept in keys and not {revoked, edited} & keys
    finally:
        _wipe(client)
        client.close()
        cli.close()
        runtime.close()


async def _load(redis_url: str) -> Any:
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), PREFIX)
    found = await read_snapshot(source)
    assert found is not None
    return found


def test_a_key_revoked_while_redis_was_away_is_refused_once_it_is_back(tmp_path: Path) -> None:
    """Revoked through the API and through another process (``trunkline keys revoke``) while
    Redis is down: both changes are saved (the API answers 200, not 500), and once Redis is
    back with its old snapshot (append-only file) the control plane publishes them."""
    server = start_redis(tmp_path, appendonly=True)
    url = f"sqlite:///{tmp_path / 'cp.db'}"
    publisher = RedisSnapshotPublisher(server.client(), PREFIX)  # fails at once while down
    runtime = dataclasses.replace(make_runtime(url, tmp_path / "state"), publisher=publisher)
    cli = build_runtime(make_settings(url, tmp_path / "state"))
    cli = dataclasses.replace(cli, publisher=publisher)
    try:
        app = create_controlplane_app(runtime, snapshot_check_s=0.05)
        with TestClient[Any](app) as http:
            world = build_world(runtime, http)
            by_api = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
            by_cli = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
            assert {by_api, by_cli} <= set(asyncio.run(_load(server.url)).keys)
            server.stop()
            world.api("acme-admin").post(
                f"/api/v1/tenants/{world.tenant('acme')}/keys/{by_api}/revoke", expect=200
            )
            with unit_of_work(cli.session_factory, cli.publish) as session:
                revoke_key(session, Principal.system(), key_tenant(session, by_cli), by_cli)
            # the operator is told: the database answers, the gateways' configuration is stale
            stale = _wait_for_sync(http, in_sync=False)
            assert stale["status"] == "ok" and stale["snapshot"]["error"] == "ConnectionError"
            server.start()
            assert _wait_for_sync(http, in_sync=True)["snapshot"] == {"in_sync": True}
            deadline = time.monotonic() + 10
            keys = set(asyncio.run(_load(server.url)).keys)
            while {by_api, by_cli} & keys and time.monotonic() < deadline:
                time.sleep(0.05)
                keys = set(asyncio.run(_load(server.url)).keys)
        assert not {by_api, by_cli} & keys, "gateways would still accept the revoked keys"
    finally:
        cli.close()
        runtime.close()
        server.destroy()


def _wait_for_sync(http: TestClient[Any], *, in_sync: bool) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    health: dict[str, Any] = http.get("/healthz").json()
    while health["snapshot"]["in_sync"] is not in_sync and time.monotonic() < deadline:
        time.sleep(0.02)
        health = http.get("/healthz").json()
    assert health["snapshot"]["in_sync"] is in_sync, health
    return health
