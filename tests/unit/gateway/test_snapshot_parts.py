"""The snapshot travels in parts: a gateway fetches and decodes only what a change changed, and
what it assembles is the snapshot the control plane published."""

from __future__ import annotations

import msgspec
import pytest
from tests.unit.gateway.conftest import default_world

from trunkline.quota.limits import Limits, QuotaBook
from trunkline.snapshot import InMemorySnapshotStore, Snapshot, store_snapshot
from trunkline.snapshot.builder import digest_of
from trunkline.snapshot.parts import CORE, Assembly, shard_name, split
from trunkline.snapshot.store import LEGACY, IncompleteSnapshot, Loaded, part_digest


def _reversed(mapping: dict) -> dict:  # type: ignore[type-arg]
    return dict(reversed(list(mapping.items())))


def _snapshot(version: int, keys: int = 200) -> Snapshot:
    world = default_world()
    for _ in range(keys):
        world.add_key()
    limits = {key_id: Limits(requests_per_minute=60) for key_id in list(world.keys)[:50]}
    return Snapshot(
        version, 10.0 * version, world.tiers, world.tenants, world.keys, world.aliases,
        world.pools, QuotaBook(keys=limits),
    )  # fmt: skip


async def _publish_and_load(
    store: InMemorySnapshotStore, assembly: Assembly, snapshot: Snapshot
) -> Loaded:
    """Publish ``snapshot``; what a gateway holding ``assembly``'s parts then fetches."""
    store_snapshot(store, snapshot)
    loaded = await store.load(assembly.digests)
    assert loaded is not None
    return loaded


def test_the_same_configuration_in_another_row_order_has_the_same_digest() -> None:
    """Updating a key's last use moved its row in PostgreSQL: the configuration was published
    again every 2 s under traffic, and every gateway reloaded it."""
    one = _snapshot(1)
    other = msgspec.structs.replace(
        one, version=2, published_at=20.0, keys=_reversed(one.keys), tenants=_reversed(one.tenants)
    )
    assert list(one.keys) != list(other.keys)
    assert digest_of(one) == digest_of(other)
    fewer = dict(list(one.keys.items())[1:])
    assert digest_of(msgspec.structs.replace(one, keys=fewer)) != digest_of(one)


async def test_a_gateway_assembles_exactly_the_published_snapshot() -> None:
    published = _snapshot(3)
    loaded = await _publish_and_load(InMemorySnapshotStore(), Assembly(), published)
    assert Assembly().apply(loaded) == published


async def test_a_new_key_moves_one_shard_and_the_gateway_fetches_only_it() -> None:
    """At 40,000 keys every gateway fetched and decoded 15 MB per key created, its event loop
    blocked for 80 ms each time."""
    store, assembly = InMemorySnapshotStore(), Assembly()
    before = _snapshot(1)
    first = await _publish_and_load(store, assembly, before)
    assembly.apply(first)
    assert len(first.blobs) > 32, "the first load fetches every part"

    key_id, entry = next(iter(_snapshot(1, keys=1).keys.items()))
    after = msgspec.structs.replace(before, version=2, keys={**before.keys, key_id: entry})
    second = await _publish_and_load(store, assembly, after)
    assert set(second.blobs) == {shard_name(key_id)}
    assert assembly.apply(second) == after


async def test_a_shard_whose_last_key_is_revoked_is_dropped_by_the_gateway() -> None:
    store, assembly = InMemorySnapshotStore(), Assembly()
    full = _snapshot(1)
    assembly.apply(await _publish_and_load(store, assembly, full))
    emptied = shard_name(next(iter(full.keys)))
    kept = {k: v for k, v in full.keys.items() if shard_name(k) != emptied}
    limits = {k: v for k, v in full.quotas.keys.items() if shard_name(k) != emptied}
    revoked = msgspec.structs.replace(
        full, version=2, keys=kept, quotas=msgspec.structs.replace(full.quotas, keys=limits)
    )
    loaded = await _publish_and_load(store, assembly, revoked)
    assert emptied not in loaded.digests and loaded.blobs == {}
    served = assembly.apply(loaded)
    assert served == revoked
    assert not any(shard_name(k) == emptied for k in served.keys)


def test_a_part_that_does_not_decode_leaves_the_gateway_on_what_it_had() -> None:
    published = _snapshot(1)
    parts = split(published)
    digests = {name: part_digest(blob) for name, blob in parts.items()}
    assembly = Assembly()
    served = assembly.apply(Loaded(1, 10.0, digests, parts))
    broken = {**digests, CORE: b"other"}
    with pytest.raises(msgspec.DecodeError):
        assembly.apply(Loaded(2, 20.0, broken, {CORE: b"\xc1 not msgpack"}))
    assert assembly.digests == digests
    assert assembly.apply(Loaded(3, 30.0, digests, {})) == msgspec.structs.replace(
        served, version=3, published_at=30.0
    )


def test_a_whole_snapshot_from_an_older_control_plane_is_served() -> None:
    """Gateways upgraded before the control plane read what it still stores whole."""
    published = _snapshot(5)
    blob = msgspec.msgpack.encode(published)
    served = Assembly().apply(Loaded(9, 0.0, {LEGACY: part_digest(blob)}, {LEGACY: blob}))
    assert served == msgspec.structs.replace(published, version=9)


def test_a_version_without_its_core_is_refused_not_served_empty() -> None:
    """A store that lost its list of parts read as a snapshot with no tenant and no key."""
    assembly = Assembly()
    with pytest.raises(IncompleteSnapshot, match="no core"):
        assembly.apply(Loaded(1, 1.0, {}, {}))
    assert assembly.digests == {}


async def test_a_version_with_no_part_changed_reuses_the_maps_and_a_later_change_leaves_them() -> (
    None
):
    """A version another control plane vouched for changes no part: the gateway copied its
    key maps all the same (5-14 ms at 40,000 keys on its event loop). The maps of a snapshot
    being served must still never change under its requests when a later version does."""
    store, assembly = InMemorySnapshotStore(), Assembly()
    before = _snapshot(1)
    served = assembly.apply(await _publish_and_load(store, assembly, before))
    vouched = assembly.apply(Loaded(2, 20.0, dict(assembly.digests), {}))
    assert vouched.version == 2 and vouched.keys is served.keys
    assert vouched.quotas.keys is served.quotas.keys
    key_id, entry = next(iter(_snapshot(1, keys=1).keys.items()))
    after = msgspec.structs.replace(before, version=3, keys={**before.keys, key_id: entry})
    assert assembly.apply(await _publish_and_load(store, assembly, after)) == after
    assert key_id not in vouched.keys and vouched.keys == before.keys
