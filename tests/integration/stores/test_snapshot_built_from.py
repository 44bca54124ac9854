"""What a stored version was built from (``SnapshotPublisher.built_from``), on the in-memory and
the Redis store: a control plane whose database is in that state knows the store holds its
configuration without building it, so it must never name more than the version holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from trunkline.snapshot import InMemorySnapshotStore, RedisSnapshotPublisher
from trunkline.snapshot.store import BuiltFrom, Patched

PREFIX = "from"


@pytest.fixture(params=["memory", "redis"])
def publisher(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield InMemorySnapshotStore()
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisSnapshotPublisher(client, PREFIX)
    client.close()


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
    assert publisher.built_from() == (version, BuiltFrom(7, "2026-01-01T00:00:00+00:00"))


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
    assert publisher.built_from() == (newer, BuiltFrom(9))


def test_a_patch_moves_its_base_on_through_the_changes_it_carries_up_to_a_gap(
    publisher: Any,
) -> None:
    """A patch holds its base and the changes it carries: a change it does not carry (another
    process's, perhaps a tenant's tier, its publish under way) stops it there."""
    _whole(publisher, BuiltFrom(7, "prices"))
    version = _patch(publisher, 8, 9)
    assert publisher.built_from() == (version, BuiltFrom(9, "prices"))
    version = _patch(publisher, 11)  # 10 is not carried: 11 may be in, 10 is not known to be
    assert publisher.built_from() == (version, BuiltFrom(9, "prices"))
    version = _patch(publisher)  # expired keys' shards: no change carried, still from 9
    assert publisher.built_from() == (version, BuiltFrom(9, "prices"))


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
