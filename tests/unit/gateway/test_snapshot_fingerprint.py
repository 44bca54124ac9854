"""The control plane republishes the configuration when its fingerprint changes: the same
content must give the same fingerprint whatever order the database returned its rows in."""

from __future__ import annotations

from tests.unit.gateway.conftest import default_world

from trunkline.snapshot import Snapshot
from trunkline.snapshot.builder import fingerprint


def _reversed(mapping: dict) -> dict:  # type: ignore[type-arg]
    return dict(reversed(list(mapping.items())))


def test_the_same_configuration_in_another_row_order_has_the_same_fingerprint() -> None:
    """Updating a key's last use moved its row in PostgreSQL: the configuration was published
    again every 2 s under traffic, and every gateway reloaded it."""
    world = default_world()
    for _ in range(3):
        world.add_key()
    parts = (world.tiers, world.tenants, world.keys, world.aliases, world.pools)
    one = Snapshot(1, 10.0, *parts)
    other = Snapshot(2, 20.0, *(_reversed(part) for part in parts))

    assert list(one.keys) != list(other.keys)
    assert fingerprint(one) == fingerprint(other)
    fewer = dict(list(world.keys.items())[1:])
    assert fingerprint(Snapshot(1, 10.0, world.tiers, world.tenants, fewer, *parts[3:])) != (
        fingerprint(one)
    )
