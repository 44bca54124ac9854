"""One contract for the snapshot store, run on the in-memory and the Redis implementation."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from trunkline.snapshot import (
    InMemorySnapshotStore,
    Loaded,
    RedisSnapshotPublisher,
    RedisSnapshotSource,
)
from trunkline.snapshot.store import (
    LEGACY,
    IncompleteSnapshot,
    Patched,
    content_digest,
    part_digest,
)


class Pair:
    def __init__(
        self, publisher: Any, source: Any, older_control_plane: Callable[[int, bytes], None]
    ) -> None:
        self.publisher = publisher
        self.source = source
        self.older_control_plane = older_control_plane
        """Store a whole snapshot as a control plane before the parts does, under a version."""


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Pair]:
    if request.param == "memory":
        memory = InMemorySnapshotStore()
        yield Pair(
            memory, memory, lambda v, blob: memory.publish(v, {LEGACY: blob}, published_at=0.0)
        )
        return
    url = request.getfixturevalue("redis_url")
    sync = redis.Redis.from_url(url)

    def older_control_plane(version: int, blob: bytes) -> None:
        sync.set("t:snapshot", blob)
        sync.set("t:snapshot:version", version)

    yield Pair(
        RedisSnapshotPublisher(sync, "t"),
        RedisSnapshotSource(aioredis.Redis.from_url(url), "t"),
        older_control_plane,
    )
    sync.close()


def _publish(store: Pair, version: int, parts: dict[str, bytes]) -> None:
    store.publisher.publish(version, parts, published_at=float(version))


async def test_empty_store_has_no_version(store: Pair) -> None:
    assert await store.source.version() is None
    assert await store.source.load() is None


async def test_publish_then_load_round_trips(store: Pair) -> None:
    version = store.publisher.next_version()
    store.publisher.publish(version, {"core": b"c-1", "keys/01": b"k-1"}, published_at=12.5)
    assert await store.source.version() == version
    loaded = await store.source.load()
    assert loaded is not None
    assert (loaded.version, loaded.published_at) == (version, 12.5)
    assert loaded.blobs == {"core": b"c-1", "keys/01": b"k-1"}
    assert loaded.digests == {"core": part_digest(b"c-1"), "keys/01": part_digest(b"k-1")}


async def test_a_reader_gets_only_the_parts_it_does_not_hold(store: Pair) -> None:
    first = {"core": b"c", "keys/01": b"a", "keys/02": b"b", "keys/03": b"gone"}
    _publish(store, store.publisher.next_version(), first)
    held = (await store.source.load()).digests  # type: ignore[union-attr]
    version = store.publisher.next_version()
    _publish(store, version, {"core": b"c", "keys/01": b"a2", "keys/02": b"b", "keys/04": b"new"})
    loaded = await store.source.load(held)
    assert loaded is not None and loaded.version == version
    assert loaded.blobs == {"keys/01": b"a2", "keys/04": b"new"}
    assert set(loaded.digests) == {"core", "keys/01", "keys/02", "keys/04"}  # keys/03 went


async def test_versions_only_move_forward(store: Pair) -> None:
    older, newer = store.publisher.next_version(), store.publisher.next_version()
    _publish(store, newer, {"core": b"new"})
    _publish(store, older, {"core": b"stale", "keys/00": b"stale"})  # a slow publisher
    loaded = await store.source.load()
    assert loaded is not None
    assert (loaded.version, loaded.blobs) == (newer, {"core": b"new"})


async def test_the_store_says_which_version_it_holds(store: Pair) -> None:
    assert store.publisher.published_version() is None
    version = store.publisher.next_version()
    _publish(store, version, {"core": b"blob"})
    assert store.publisher.published_version() == version == await store.source.version()


async def test_the_store_names_the_content_it_holds(store: Pair) -> None:
    assert store.publisher.published_digest() is None
    older, newer = store.publisher.next_version(), store.publisher.next_version()
    new = {"core": b"new", "keys/00": b"k"}
    _publish(store, newer, new)
    _publish(store, older, {"core": b"stale"})  # not stored: nor its digest
    expected = content_digest({n: part_digest(b) for n, b in new.items()})
    assert store.publisher.published_digest() == expected


def test_versions_stay_above_old_ones_after_redis_loses_its_data(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = itertools.count(1_700_000_000_000, 1_000)  # ms; a restart takes at least a second
    publisher = RedisSnapshotPublisher(client, "wiped", clock_ms=lambda: next(clock))
    try:
        held = publisher.next_version()  # what the gateways hold
        publisher.publish(held, {"core": b"before"}, published_at=1.0)
        client.delete(*client.keys("wiped:*"))
        assert publisher.published_version() is None
        assert publisher.published_digest() is None
        # Back at an empty counter, the next version must still be new to the gateways.
        assert publisher.next_version() > held
    finally:
        client.delete(*client.keys("wiped:*"))
        client.close()


def test_versions_stay_above_another_publisher_s_after_redis_loses_its_data(redis_url: str) -> None:
    """Two control planes whose clocks differ by a minute (or a CLI run on a laptop whose clock
    is ahead): the counter followed the fast one's clock. Once Redis lost its data the other one
    published again under its own clock, below the version every gateway held, so they kept
    the old configuration, and ignored every change after it (a revoked key accepted), for
    that minute. A publisher hands out no version below one it has seen stored."""
    client = redis.Redis.from_url(redis_url)
    fast = RedisSnapshotPublisher(client, "skew", clock_ms=lambda: 1_700_000_060_000)
    slow = RedisSnapshotPublisher(client, "skew", clock_ms=lambda: 1_700_000_000_000)
    try:
        held = fast.next_version()  # what the gateways hold
        fast.publish(held, {"core": b"before"}, published_at=1.0)
        assert slow.published_version() == held  # as its check reads it
        client.delete(*client.keys("skew:*"))
        assert slow.next_version() > held
    finally:
        client.delete(*client.keys("skew:*"))
        client.close()


async def test_a_publisher_that_raced_another_sends_every_part(redis_url: str) -> None:
    """A part left out because the store held it must not be replaced meanwhile by another
    control plane's publish: the version would pair one's parts with the other's."""
    client = redis.Redis.from_url(redis_url)
    one, other = RedisSnapshotPublisher(client, "race"), RedisSnapshotPublisher(client, "race")
    try:
        one.publish(one.next_version(), {"core": b"c", "keys/00": b"a"}, published_at=1.0)
        stale_view = client.hgetall("race:snapshot:v2:parts")
        other.publish(other.next_version(), {"core": b"c", "keys/00": b"b"}, published_at=2.0)
        # ``one`` read the digests before ``other`` published: it would leave keys/00 out.
        hgetall = client.hgetall
        client.hgetall = lambda name: stale_view if name.endswith(":parts") else hgetall(name)  # type: ignore[method-assign]
        one.publish(one.next_version(), {"core": b"c2", "keys/00": b"a"}, published_at=3.0)
        client.hgetall = hgetall  # type: ignore[method-assign]
        source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "race")
        loaded = await source.load()
        assert loaded is not None and loaded.blobs == {"core": b"c2", "keys/00": b"a"}
    finally:
        client.delete(*client.keys("race:*"))
        client.close()


async def test_gateways_read_a_whole_snapshot_an_older_control_plane_stored(
    redis_url: str,
) -> None:
    """Gateways upgraded before the control plane keep serving its configuration."""
    client = redis.Redis.from_url(redis_url)
    client.set("old:snapshot", b"whole-blob")
    client.set("old:snapshot:version", 41)
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "old")
    try:
        assert await source.version() == 41
        loaded = await source.load()
        assert loaded is not None
        assert (loaded.version, loaded.blobs) == (41, {LEGACY: b"whole-blob"})
        assert await source.load(loaded.digests) == Loaded(41, 0.0, loaded.digests, {})
        publisher = RedisSnapshotPublisher(client, "old")
        version = publisher.next_version()
        publisher.publish(version, {"core": b"parts"}, published_at=5.0)
        assert await source.version() == version  # the parts win once published
        assert (await source.load(loaded.digests)).blobs == {"core": b"parts"}  # type: ignore[union-attr]
    finally:
        client.delete(*client.keys("old:*"))
        client.close()


async def test_a_lost_part_is_noticed_and_published_again(redis_url: str) -> None:
    """A part evicted or deleted by hand stayed lost: the store's digest still matched the
    database, so nothing republished it, and every gateway started since could not load."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "lost")
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "lost")
    parts = {"core": b"c", "keys/05": b"k5", "keys/06": b"k6"}
    try:
        publisher.publish(publisher.next_version(), parts, published_at=1.0)
        whole = publisher.published_digest()
        client.delete("lost:snapshot:v2:part:keys/05")
        assert publisher.published_digest() is None  # so the control plane's check publishes
        with pytest.raises(IncompleteSnapshot, match="keys/05"):
            await source.load()
        publisher.publish(publisher.next_version(), parts, published_at=2.0)  # same content
        assert publisher.published_digest() == whole
        loaded = await source.load()
        assert loaded is not None and loaded.blobs == parts
    finally:
        client.delete(*client.keys("lost:*"))
        client.close()


async def test_a_version_whose_part_list_is_gone_is_no_snapshot_to_serve(redis_url: str) -> None:
    """A lost list of parts read as a snapshot with no key at all: every key got 401."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "nolist")
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "nolist")
    try:
        publisher.publish(publisher.next_version(), {"core": b"c"}, published_at=1.0)
        client.delete("nolist:snapshot:v2:parts")
        assert publisher.published_digest() is None
        with pytest.raises(IncompleteSnapshot, match="no part"):
            await source.load()
    finally:
        client.delete(*client.keys("nolist:*"))
        client.close()


async def test_a_part_read_with_other_bytes_than_listed_is_not_served(redis_url: str) -> None:
    """Parts are read one command at a time: bytes that are not the listed digest's (a publish
    in between) are read again, and never paired with another version's list."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "torn")
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "torn")
    try:
        publisher.publish(publisher.next_version(), {"core": b"c", "keys/01": b"a"}, published_at=1)
        client.set("torn:snapshot:v2:part:keys/01", b"written by someone else")
        with pytest.raises(IncompleteSnapshot, match="keys/01"):
            await source.load()
    finally:
        client.delete(*client.keys("torn:*"))
        client.close()


async def test_an_older_control_plane_publishing_after_a_newer_one_is_read(
    redis_url: str,
) -> None:
    """A control plane rolled back (or an old one beside a new one during an upgrade): the
    gateways kept the new one's last parts for good, a key revoked through the old one
    accepted."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "back")
    source = RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "back")
    try:
        version = publisher.next_version()
        publisher.publish(version, {"core": b"new"}, published_at=1.0)
        client.set("back:snapshot", b"whole from the old one")
        client.set("back:snapshot:version", version + 1)  # the old one shares the counter
        assert await source.version() == version + 1
        loaded = await source.load()
        assert loaded is not None and loaded.blobs == {LEGACY: b"whole from the old one"}
    finally:
        client.delete(*client.keys("back:*"))
        client.close()


async def test_a_patch_replaces_its_parts_and_keeps_every_other_as_stored(store: Pair) -> None:
    _publish(
        store, store.publisher.next_version(), {"core": b"c", "keys/01": b"a", "keys/02": b"b"}
    )
    version = store.publisher.next_version()
    changed = {"keys/01": b"a2", "keys/02": None, "keys/03": b"new"}
    assert store.publisher.patch(version, changed, published_at=3.0) is Patched.STORED
    loaded = await store.source.load()
    assert loaded is not None and (loaded.version, loaded.published_at) == (version, 3.0)
    assert loaded.blobs == {"core": b"c", "keys/01": b"a2", "keys/03": b"new"}
    assert store.publisher.published_digest() == content_digest(loaded.digests)


async def test_a_patch_never_moves_the_version_back_nor_patches_no_snapshot(store: Pair) -> None:
    older, newer = store.publisher.next_version(), store.publisher.next_version()
    assert store.publisher.patch(older, {"keys/01": b"a"}, published_at=1.0) is Patched.NO_BASE
    _publish(store, newer, {"core": b"c"})
    assert store.publisher.patch(older, {"keys/01": b"a"}, published_at=1.0) is Patched.REFUSED
    assert not store.publisher.publish(older, {"core": b"stale"}, published_at=1.0)
    loaded = await store.source.load()
    assert loaded is not None and (loaded.version, loaded.blobs) == (newer, {"core": b"c"})


async def test_a_patch_is_not_stored_over_a_newer_whole_snapshot_of_an_older_control_plane(
    store: Pair,
) -> None:
    """During an upgrade (or after a rollback) an older control plane stores the snapshot
    whole, and the gateways serve it. A key change patched over the parts from before it put
    them back under a newer version: a key the older control plane had revoked was accepted
    again (for up to a minute, until a thorough check). The change is published whole."""
    _publish(store, store.publisher.next_version(), {"core": b"c", "keys/01": b"with-k"})
    store.older_control_plane(store.publisher.next_version(), b"whole, k revoked")
    patched = store.publisher.next_version()
    assert store.publisher.patch(patched, {"keys/02": b"j"}, published_at=3.0) is Patched.NO_BASE
    loaded = await store.source.load()
    assert loaded is not None and loaded.blobs == {LEGACY: b"whole, k revoked"}


async def test_a_patch_keeps_what_another_publisher_wrote_after_it_looked(redis_url: str) -> None:
    """A patch names the parts it keeps by the digests it read; a part another control plane
    rewrote in between is read again, not put back as it was (which would drop that change)."""
    client = redis.Redis.from_url(redis_url)
    ours, theirs = RedisSnapshotPublisher(client, "t"), RedisSnapshotPublisher(client, "t")
    ours.publish(ours.next_version(), {"core": b"c", "keys/01": b"a"}, published_at=1.0)
    slow, version = theirs.next_version(), ours.next_version()  # theirs publishes late
    read, looks = ours._stored_digests, []

    def then_another_publishes() -> tuple[dict[str, bytes], bytes | None]:
        looks.append(read())
        if len(looks) == 1:
            theirs.publish(slow, {"core": b"c", "keys/01": b"b"}, published_at=2.0)
        return looks[-1]

    ours._stored_digests = then_another_publishes  # type: ignore[method-assign]
    assert ours.patch(version, {"keys/02": b"x"}, published_at=3.0) is Patched.STORED
    assert len(looks) == 2
    loaded = await RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "t").load()
    assert loaded is not None and loaded.version == version
    assert loaded.blobs == {"core": b"c", "keys/01": b"b", "keys/02": b"x"}
    client.close()


async def test_a_patch_keeps_a_part_another_publisher_added_after_it_looked(
    redis_url: str,
) -> None:
    """A patch checked the parts it had read, not the ones added since: it deleted a shard
    another control plane had just stored its first key in, after telling that one STORED."""
    client = redis.Redis.from_url(redis_url)
    ours, theirs = RedisSnapshotPublisher(client, "t"), RedisSnapshotPublisher(client, "t")
    ours.publish(ours.next_version(), {"core": b"c", "keys/01": b"a"}, published_at=1.0)
    first, version = theirs.next_version(), ours.next_version()
    read, looks = ours._stored_digests, []

    def then_another_adds_a_shard() -> tuple[dict[str, bytes], bytes | None]:
        looks.append(read())
        if len(looks) == 1:
            assert theirs.patch(first, {"keys/07": b"k"}, published_at=2.0) is Patched.STORED
        return looks[-1]

    ours._stored_digests = then_another_adds_a_shard  # type: ignore[method-assign]
    assert ours.patch(version, {"keys/01": b"b"}, published_at=3.0) is Patched.STORED
    assert len(looks) == 2, "read again"
    loaded = await RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "t").load()
    assert loaded is not None and loaded.version == version
    assert loaded.blobs == {"core": b"c", "keys/01": b"b", "keys/07": b"k"}
    client.close()


async def test_a_patch_is_not_stored_over_an_older_control_plane_s_publish_after_it_looked(
    redis_url: str,
) -> None:
    """The same when the older control plane stores its whole snapshot between the patch's read
    of the parts and its write."""
    client = redis.Redis.from_url(redis_url)
    ours = RedisSnapshotPublisher(client, "t")
    ours.publish(ours.next_version(), {"core": b"c", "keys/01": b"with-k"}, published_at=1.0)
    theirs, version = ours.next_version(), ours.next_version()
    read, looks = ours._stored_digests, []

    def then_an_older_control_plane_publishes() -> tuple[dict[str, bytes], bytes | None]:
        looks.append(read())
        if len(looks) == 1:
            client.set("t:snapshot", b"whole, k revoked")
            client.set("t:snapshot:version", theirs)
        return looks[-1]

    ours._stored_digests = then_an_older_control_plane_publishes  # type: ignore[method-assign]
    assert ours.patch(version, {"keys/02": b"j"}, published_at=3.0) is Patched.NO_BASE
    loaded = await RedisSnapshotSource(aioredis.Redis.from_url(redis_url), "t").load()
    assert loaded is not None and loaded.blobs == {LEGACY: b"whole, k revoked"}
    client.close()


async def test_versions_stay_above_one_gateways_report_serving(redis_url: str) -> None:
    """No publisher remembers the version the gateways serve (Redis lost its data and every
    control plane restarted): a gateway reports it, and the next versions are above it; a lower
    report (another gateway's, behind) does not lower it."""
    client = redis.Redis.from_url(redis_url)
    gateway = aioredis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "served", clock_ms=lambda: 1_700_000_000_000)
    try:
        assert publisher.served_version() is None
        source = RedisSnapshotSource(gateway, "served")
        await source.report_served(1_700_000_086_400_000)
        await source.report_served(1_700_000_000_500)
        assert publisher.served_version() == 1_700_000_086_400_000
        assert publisher.next_version() > 1_700_000_086_400_000
    finally:
        client.delete(*client.keys("served:*"))
        client.close()
        await gateway.aclose()


def test_a_version_written_beyond_any_handed_out_stops_no_publish_once_deleted(
    redis_url: str,
) -> None:
    """A tool wrote the version in nanoseconds, beyond what the scripts compare exactly (Lua
    numbers are doubles): a publisher that had read it handed out the same version again and
    again, or a negative one, then failed every call, even after the key was deleted, until
    every control plane restarted. It is not taken for a version handed out."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, "bogus")
    try:
        held = publisher.next_version()
        assert publisher.publish(held, {"core": b"before"}, published_at=1.0)
        client.set("bogus:snapshot:v2:version", time.time_ns())
        publisher.published_version()  # as its check reads it
        client.delete("bogus:snapshot:v2:version")
        for content in (b"after", b"later"):
            version = publisher.next_version()
            assert version > held
            assert publisher.publish(version, {"core": content}, published_at=2.0)
            held = version
    finally:
        client.delete(*client.keys("bogus:*"))
        client.close()
