"""The versioned configuration snapshot the control plane publishes and gateways serve from.

The gateway's hot path reads only this snapshot (never the database): tenants,
key hashes, tiers, entitlements, aliases, pools and endpoints.
"""

from trunkline.snapshot.parts import read_snapshot, store_snapshot
from trunkline.snapshot.redis_store import RedisSnapshotPublisher, RedisSnapshotSource
from trunkline.snapshot.schemas import (
    AliasEntry,
    CascadeEntry,
    EndpointEntry,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)
from trunkline.snapshot.store import (
    InMemorySnapshotStore,
    Loaded,
    SnapshotPublisher,
    SnapshotSource,
)

__all__ = [
    "AliasEntry",
    "CascadeEntry",
    "EndpointEntry",
    "InMemorySnapshotStore",
    "KeyEntry",
    "Loaded",
    "PoolEntry",
    "RedisSnapshotPublisher",
    "RedisSnapshotSource",
    "Snapshot",
    "SnapshotPublisher",
    "SnapshotSource",
    "TenantEntry",
    "TierEntry",
    "read_snapshot",
    "store_snapshot",
]
