"""The control plane publishes the snapshot again when Redis lost it (restarted without its
data): gateways started afterwards load it instead of waiting for the next config change."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from litestar.testing import TestClient

from trunkline.apps.controlplane import create_controlplane_app, republish_if_lost
from trunkline.snapshot import RedisSnapshotPublisher, RedisSnapshotSource, decode_snapshot
from unit.controlplane.cp_support import build_world, make_runtime

PREFIX = "republish"
KEYS = (f"{PREFIX}:snapshot", f"{PREFIX}:snapshot:version", f"{PREFIX}:snapshot:counter")


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
            assert not republish_if_lost(runtime)  # held: nothing to do
            client.delete(*KEYS)  # Redis restarted empty
            deadline = time.monotonic() + 10
            while runtime.publisher.published_version() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            after = runtime.publisher.published_version()
        assert after is not None and after > before, "gateways would take it for the old one"
        loaded = asyncio.run(_load(redis_url))
        assert "acme" in {tenant.slug for tenant in loaded.tenants.values()}
    finally:
        client.delete(*KEYS)
        client.close()
        runtime.close()


async def _load(redis_url: str) -> Any:
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), PREFIX)
    found = await source.load()
    assert found is not None
    return decode_snapshot(found[1])
