"""What a stored version was built from (``SnapshotPublisher.built_from``), on the in-memory and
the Redis store: a control plane whose database is in that state knows the store holds its
configuration without building it, so it must never name more than the version holds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from trunkline.snapshot import InMemorySnapshotStore, RedisSnapshotPublisher, RedisSnapshotSource
from trunkline.snapshot.store import BuiltFrom, Patched, Recorded

PREFIX = "from"


@pytest.fixture(params=["memory", "redis"])
def publisher(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySnapshotStore()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisSnapshotPublisher(client, PREFIX)
    client.close()


@pytest.fixture
def source(publisher: Any, request: pytest.FixtureRequest) -> Any:
    """What a gateway reads ``publisher``'s store through."""
    if isinstance(publisher, InMemorySnapshotStore):
        return publisher
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    return RedisSnapshotSource(client, PREFIX)


def _whole(publisher: Any, built_from: BuiltFrom | None) -> int:
    version = publisher.next_version()
    parts = {"core": b"core", "keys/00": b"a", "keys/01": b"b"}
    assert publisher.publish(version, parts, published_at=1.0, built_from=built_from)
    return int(version)


def _patch(publisher: Any, *carried: int) -> int:
    version = publisher.next_version()
    changed = {"keys/01": f"b{version}".encode()}
    outcome = publisher.patch(version, changed, published_at=2.0, carried=carried)
    assert outcome is Patched.STORED
    return int(version)


def test_a_whole_publish_records_what_it_was_built_from(publisher: Any) -> None:
    assert publisher.built_from() is None
    version = _whole(publisher, BuiltFrom(7, "2026-01-01T00:00:00+00:00"))
    assert publisher.built_from() == Recorded(version, BuiltFrom(7, "2026-01-01T00:00:00+00:00"))


def test_a_publish_that_does_not_say_leaves_nothing_known(publisher: Any) -> None:
    """An older control plane's publish (or any that does not know): the state recorded
    before names the version before, not this one."""
    _whole(publisher, BuiltFrom(7))
    _whole(publisher, None)
    assert publisher.built_from() is None


def test_a_refused_publish_leaves_what_the_stored_version_was_built_from(publisher: Any) -> None:
    older = publisher.next_version()
    newer = _whole(publisher, BuiltFrom(9))
    assert not publisher.publish(older, {"core": b"old"}, published_at=0.0, built_from=BuiltFrom(3))
    assert publisher.built_from() == Recorded(newer, BuiltFrom(9))


def test_a_patch_moves_its_base_on_through_the_changes_it_carries_up_to_a_gap(
    publisher: Any,
) -> None:
    """A patch holds its base and the changes it carries: a change it does not carry (another
    process's, perhaps a tenant's tier, its publish under way) stops it there."""
    _whole(publisher, BuiltFrom(7, "prices"))
    version = _patch(publisher, 8, 9)
    assert publisher.built_from() == Recorded(version, BuiltFrom(9, "prices"))
    version = _patch(publisher, 11)  # 10 is not carried: 11 is in, 10 is not known to be
    assert publisher.built_from() == Recorded(version, BuiltFrom(9, "prices"), frozenset({11}))
    version = _patch(publisher)  # expired keys' shards: no change carried, still from 9
    assert publisher.built_from() == Recorded(version, BuiltFrom(9, "prices"), frozenset({11}))


def test_patches_interleaved_past_a_gap_move_the_record_on_once_it_fills(
    publisher: Any,
) -> None:
    """Two control planes' key changes, one's patch stored before the other's (a has 10 and
    12, b 11 and 13): each patch alone carries a gap, yet once every change is stored the
    record names them all. Stopped at the first gap, every later change looked as if it did
    not follow, and both built whole, refusing one another's builds."""
    _whole(publisher, BuiltFrom(9, "prices"))
    _patch(publisher, 11)  # b's, before a's 10: 11 is stored, past the gap
    assert publisher.built_from()[1] == BuiltFrom(9, "prices")
    _patch(publisher, 10)  # a's: 10 and 11 are in
    _patch(publisher, 13)  # b's again, past a's 12
    version = _patch(publisher, 12)
    assert publisher.built_from() == Recorded(version, BuiltFrom(13, "prices"))


def test_a_whole_publish_keeps_what_its_base_knew_beyond_its_own_state(publisher: Any) -> None:
    """A whole build read its state before the patches stored meanwhile, and holds them (it
    reads after its version, handed out after theirs): its record starts from the further."""
    _whole(publisher, BuiltFrom(9, "prices"))
    _patch(publisher, 10)
    _patch(publisher, 12)
    version = _whole(publisher, BuiltFrom(8, "prices"))
    _patch(publisher, 11)
    assert publisher.built_from()[1] == BuiltFrom(12, "prices")
    assert version < publisher.built_from()[0]


def test_a_patch_over_a_version_not_known_leaves_nothing_known(publisher: Any) -> None:
    _whole(publisher, None)
    _patch(publisher, 1, 2, 3)
    assert publisher.built_from() is None


def test_a_version_written_by_an_older_script_is_not_taken_for_the_one_before(
    redis_url: str,
) -> None:
    """An older control plane's script writes the version and parts, not what they were built
    from: the record of the version before stays, and must not be read as this one's."""
    client = redis.Redis.from_url(redis_url)
    publisher = RedisSnapshotPublisher(client, PREFIX)
    try:
        version = _whole(publisher, BuiltFrom(5))
        client.set(f"{PREFIX}:snapshot:v2:version", version + 1)  # what its script wrote
        assert publisher.built_from() is None
    finally:
        client.close()


def test_vouching_stores_the_content_again_under_a_newer_version_that_says_so(
    publisher: Any, source: Any
) -> None:
    """A control plane that built the content from the state its database is in, and found it
    stored already, says so for the others (a record stopped by a gap never moved on else);
    a gateway holding the version before fetches no part of the new one."""
    version = _whole(publisher, BuiltFrom(7))
    _patch(publisher, 9)  # 8 not carried: the record stays at 7

    async def read_vouch_read() -> tuple[Any, Any]:  # one event loop for the Redis reader
        held = await source.load()
        content, new = publisher.published_digest(), publisher.next_version()
        assert publisher.vouch(held.version, content, new, BuiltFrom(9))
        assert publisher.built_from() == Recorded(new, BuiltFrom(9))
        assert publisher.published_version() == new and publisher.published_digest() == content
        return held, await source.load(held.digests)

    held, loaded = asyncio.run(read_vouch_read())
    assert loaded.version > held.version > version
    assert loaded.digests == held.digests and loaded.blobs == {}


def test_vouching_for_content_the_store_no_longer_holds_does_nothing(publisher: Any) -> None:
    version = _whole(publisher, BuiltFrom(7))
    content = publisher.published_digest()
    moved = _patch(publisher, 8)  # another process stored a newer version meanwhile
    assert not publisher.vouch(version, content, publisher.next_version(), BuiltFrom(9))
    other = publisher.published_digest()
    assert not publisher.vouch(moved, b"not it", publisher.next_version(), BuiltFrom(9))
    assert not publisher.vouch(moved, other, moved, BuiltFrom(9))  # not a newer version
    assert publisher.built_from() == Recorded(moved, BuiltFrom(8))


def test_a_patch_read_before_the_state_vouched_for_cannot_carry_the_record(publisher: Any) -> None:
    """A patch's version handed out before change 8 committed (its shards read without it) and
    stored after a check vouched for 8: over the vouched version it would move the record on,
    claiming 8 for content without it (a revoked key accepted, if 8's own publish failed, until
    the thorough check). Vouching under a version handed out after the state was read refuses
    it."""
    version = _whole(publisher, BuiltFrom(7))
    early = publisher.next_version()  # the patch's, before 8 committed
    new = publisher.next_version()  # the check's, after it read the state with 8
    assert publisher.vouch(version, publisher.published_digest(), new, BuiltFrom(8))
    late = publisher.patch(early, {"keys/01": b"without 8"}, published_at=3.0, carried=(9,))
    assert late is Patched.REFUSED
    assert publisher.built_from() == Recorded(new, BuiltFrom(8))


def test_a_whole_publish_holds_every_change_up_to_the_furthest_stored_before_it(
    publisher: Any,
) -> None:
    """It read the database after the patches stored before it got their versions, so after
    their changes and every one before them committed (the count's row lock orders commits):
    a record left at 10, below 11, sent a tenant change at 11, whose own whole build this one
    refused, to build again."""
    _whole(publisher, BuiltFrom(9, "prices"))
    _patch(publisher, 10)
    _patch(publisher, 12)
    version = _whole(publisher, BuiltFrom(10, "prices"))
    assert publisher.built_from() == Recorded(version, BuiltFrom(12, "prices"))
    version = _patch(publisher, 14)
    assert publisher.built_from() == Recorded(version, BuiltFrom(12, "prices"), frozenset({14}))


def test_a_publish_alone_records_its_own_state_however_far_the_record_was(
    publisher: Any,
) -> None:
    """The database restored from a backup: the count names less than the store's record, and
    the changes made from there are other ones. A record kept above it claimed them as they
    were made, and checks said "current" while the store served a key revoked since."""
    _whole(publisher, BuiltFrom(9, "prices"))
    _patch(publisher, 10)
    _patch(publisher, 12)
    version = _whole(publisher, BuiltFrom(5, "prices", alone=True))
    assert publisher.built_from() == Recorded(version, BuiltFrom(5, "prices"))
    version = _patch(publisher, 6)
    assert publisher.built_from() == Recorded(version, BuiltFrom(6, "prices"))
    new = publisher.next_version()
    assert publisher.vouch(version, publisher.published_digest(), new, BuiltFrom(3, alone=True))
    assert publisher.built_from() == Recorded(new, BuiltFrom(3))


def test_past_the_cap_the_furthest_generations_are_forgotten_not_claimed(
    publisher: Any,
) -> None:
    _whole(publisher, BuiltFrom(0))
    for generation in range(2, 2 + 600):
        _patch(publisher, generation)
    version = _patch(publisher, 1)
    assert publisher.built_from() == Recorded(version, BuiltFrom(513))


def test_both_stores_keep_the_same_record_through_any_sequence_of_writes(redis_url: str) -> None:
    """The record moves in Lua on Redis and in Python in memory: the same writes, in a random
    order with gaps, whole builds (some alone) and vouches, give the same record after each."""
    client = redis.Redis.from_url(redis_url)
    try:
        for seed in range(30):
            client.flushall()
            rng = random.Random(seed)
            stores = [InMemorySnapshotStore(), RedisSnapshotPublisher(client, PREFIX)]
            generations = list(range(1, 700))
            rng.shuffle(generations)
            for step in range(120):
                kind = rng.random()
                if kind < 0.1:
                    state = rng.choice([None, rng.randint(0, 40), rng.randint(0, 700)])
                    alone = rng.random() < 0.3
                    for store in stores:
                        _whole(store, None if state is None else BuiltFrom(state, alone=alone))
                elif kind < 0.2:
                    vouched = BuiltFrom(rng.randint(0, 40), alone=rng.random() < 0.3)
                    for store in stores:
                        held, content = store.published_version(), store.published_digest()
                        if held is not None:
                            store.vouch(held, content, store.next_version(), vouched)
                elif stores[0].published_version() is not None:
                    carried = [generations.pop() for _ in range(rng.randint(0, 12)) if generations]
                    if rng.random() < 0.3:
                        carried = list(range(step * 5, step * 5 + rng.randint(0, 8)))
                    for store in stores:
                        _patch(store, *carried)
                memory, in_redis = (store.built_from() for store in stores)
                assert (memory and memory[1:]) == (in_redis and in_redis[1:]), (seed, step)
    finally:
        client.close()
