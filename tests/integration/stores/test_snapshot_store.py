"""One contract for the snapshot store, run on the in-memory and the Redis implementation."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from trunkline.snapshot import (
    InMemorySnapshotStore,
    RedisSnapshotPublisher,
    RedisSnapshotSource,
)


class Pair:
    def __init__(self, publisher: Any, source: Any) -> None:
        self.publisher = publisher
        self.source = source


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Pair]:
    if request.param == "memory":
        memory = InMemorySnapshotStore()
        yield Pair(memory, memory)
        return
    url = request.getfixturevalue("redis_url")
    sync = redis.Redis.from_url(url)
    yield Pair(
        RedisSnapshotPublisher(sync, "t"), RedisSnapshotSource(aioredis.Redis.from_url(url), "t")
    )
    sync.close()


async def test_empty_store_has_no_version(store: Pair) -> None:
    assert await store.source.version() is None
    assert await store.source.load() is None


async def test_publish_then_load_round_trips(store: Pair) -> None:
    version = store.publisher.next_version()
    store.publisher.publish(version, b"blob-1")
    assert await store.source.version() == version
    assert await store.source.load() == (version, b"blob-1")


async def test_versions_only_move_forward(store: Pair) -> None:
    older, newer = store.publisher.next_version(), store.publisher.next_version()
    assert newer > older
    store.publisher.publish(newer, b"new")
    store.publisher.publish(older, b"stale")  # a slow publisher must not roll back
    assert await store.source.load() == (newer, b"new")


async def test_the_store_says_which_version_it_holds(store: Pair) -> None:
    assert store.publisher.published_version() is None
    version = store.publisher.next_version()
    store.publisher.publish(version, b"blob")
    assert store.publisher.published_version() == version == await store.source.version()


async def test_the_store_names_the_content_it_holds(store: Pair) -> None:
    assert store.publisher.published_digest() is None
    older, newer = store.publisher.next_version(), store.publisher.next_version()
    store.publisher.publish(newer, b"new", digest=b"d-new")
    store.publisher.publish(older, b"stale", digest=b"d-stale")  # not stored: nor its digest
    assert store.publisher.published_digest() == b"d-new"
    store.publisher.publish(store.publisher.next_version(), b"newest")  # without a digest
    assert store.publisher.published_digest() is None


def test_versions_stay_above_old_ones_after_redis_loses_its_data(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = itertools.count(1_700_000_000_000, 1_000)  # ms; a restart takes at least a second
    publisher = RedisSnapshotPublisher(client, "wiped", clock_ms=lambda: next(clock))
    try:
        held = publisher.next_version()  # what the gateways hold
        publisher.publish(held, b"before", digest=b"d")
        client.delete("wiped:snapshot", "wiped:snapshot:version", "wiped:snapshot:counter")
        assert publisher.published_version() is None
        assert publisher.published_digest() is None  # a digest is nothing without its blob
        # Back at an empty counter, the next version must still be new to the gateways.
        assert publisher.next_version() > held
    finally:
        client.close()
