"""The snapshot in parts, so a change moves only what it changed.

At 40,000 keys a snapshot is about 12.5 MB, and a gateway decoding it whole blocks its event
loop for 50-90 ms: per change, and every key created is one. So the control plane stores it as a
``core`` part (tiers, tenants, aliases, pools, every quota limit but the keys') and the keys
in ``kit.shards.SHARDS`` parts by their id (each key's entry and limits in one). A gateway
fetches and decodes only the parts whose digest differs from those it holds: a new key is
one shard of a 64th of the keys. Each part is encoded canonically (maps in sorted order), so
the same content always has the same digest whatever order the database returned its rows in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from trunkline.kit.shards import key_shard
from trunkline.quota.limits import Limits
from trunkline.snapshot.schemas import KeyEntry, Snapshot
from trunkline.snapshot.store import (
    CORE_PART,
    LEGACY,
    BuiltFrom,
    IncompleteSnapshot,
    Loaded,
    SnapshotPublisher,
    SnapshotSource,
)

CORE = CORE_PART


class KeyShard(msgspec.Struct, frozen=True):
    keys: dict[str, KeyEntry]
    limits: dict[str, Limits]


def shard_name(key_id: str) -> str:
    """The part holding ``key_id``: stable across processes and releases (not ``hash()``)."""
    return part_of_shard(key_shard(key_id))


def part_of_shard(shard: int) -> str:
    return f"keys/{shard:02d}"


_canonical = msgspec.msgpack.Encoder(order="sorted")
_core_decoder = msgspec.msgpack.Decoder(Snapshot)
_shard_decoder = msgspec.msgpack.Decoder(KeyShard)


def split(snapshot: Snapshot) -> dict[str, bytes]:
    """The snapshot's parts, without its version and time (the store keeps those)."""
    core = msgspec.structs.replace(
        snapshot,
        version=0,
        published_at=0.0,
        keys={},
        quotas=msgspec.structs.replace(snapshot.quotas, keys={}),
    )
    return {CORE: _canonical.encode(core)} | key_parts(snapshot.keys, snapshot.quotas.keys)


def key_parts(keys: Mapping[str, KeyEntry], limits: Mapping[str, Limits]) -> dict[str, bytes]:
    """The shards holding ``keys`` and their ``limits``, encoded; a shard with no key is no
    part. The whole snapshot's and a few shards' rebuilt alone are encoded by this alone, so
    the same keys give the same bytes either way."""
    shards: dict[str, KeyShard] = {}
    for key_id, entry in keys.items():
        shard = shards.setdefault(shard_name(key_id), KeyShard({}, {}))
        shard.keys[key_id] = entry
        if key_id in limits:
            shard.limits[key_id] = limits[key_id]
    for key_id in limits.keys() - keys.keys():  # none from the builders
        shards.setdefault(shard_name(key_id), KeyShard({}, {})).limits[key_id] = limits[key_id]
    return {name: _canonical.encode(shard) for name, shard in shards.items()}


def store_snapshot(
    publisher: SnapshotPublisher, snapshot: Snapshot, built_from: BuiltFrom | None = None
) -> bool:
    """Publish ``snapshot`` under its own version and time, built from ``built_from`` (None:
    not known): whether the store took it."""
    parts = split(snapshot)
    at = snapshot.published_at
    return publisher.publish(snapshot.version, parts, published_at=at, built_from=built_from)


async def read_snapshot(source: SnapshotSource) -> Snapshot | None:
    """The snapshot the store holds, whole (None: none)."""
    loaded = await source.load()
    return None if loaded is None else Assembly().apply(loaded)


class Assembly:
    """A gateway's decoded parts, brought up to date with what each load fetched. The keys of
    unchanged shards are copied, not gathered again: a shard's change at 28,000 keys took 8 ms
    to join, most of it rebuilding the key map."""

    def __init__(self) -> None:
        self.digests: dict[str, bytes] = {}
        self._core = Snapshot.empty()
        self._shards: dict[str, KeyShard] = {}
        self._keys: dict[str, KeyEntry] = {}
        self._limits: dict[str, Limits] = {}

    def apply(self, loaded: Loaded) -> Snapshot:
        """The snapshot ``loaded`` describes. Raises (and keeps what it held) when a part does
        not decode, or the version has no core (``IncompleteSnapshot``): an empty snapshot
        would refuse every key with a 401."""
        if LEGACY in loaded.digests:
            whole = _core_decoder.decode(loaded.blobs[LEGACY])
            self.digests, self._core, self._shards = dict(loaded.digests), whole, {}
            self._keys, self._limits = {}, {}
            return msgspec.structs.replace(whole, version=loaded.version)
        if CORE not in loaded.digests:
            raise IncompleteSnapshot(f"snapshot version {loaded.version} has no core part")
        core = self._core if CORE not in loaded.blobs else _core_decoder.decode(loaded.blobs[CORE])
        fetched = {n: _shard_decoder.decode(b) for n, b in loaded.blobs.items() if n != CORE}
        held = self._shards
        shards = {n: fetched[n] if n in fetched else held[n] for n in loaded.digests if n != CORE}
        keys, limits = self._patched(shards, fetched.keys() | (held.keys() - shards.keys()))
        self.digests, self._core, self._shards = dict(loaded.digests), core, shards
        self._keys, self._limits = keys, limits
        quotas = msgspec.structs.replace(core.quotas, keys=limits)
        return msgspec.structs.replace(
            core, version=loaded.version, published_at=loaded.published_at, keys=keys, quotas=quotas
        )

    def _patched(
        self, shards: dict[str, KeyShard], changed: Iterable[str]
    ) -> tuple[dict[str, KeyEntry], dict[str, Limits]]:
        """The key and limit maps of ``shards``: those held, copied (a served snapshot is never
        changed under its requests), with the ``changed`` shards' entries replaced; those held
        themselves when none changed (a version another control plane vouched for: copying
        them took 5-14 ms at 40,000 keys, the gateway's event loop blocked)."""
        changed = list(changed)
        if not changed:
            return self._keys, self._limits
        if 2 * len(changed) > len(shards):
            return _gathered(shards.values())
        keys, limits = dict(self._keys), dict(self._limits)
        for name in changed:  # every old entry out before any new one is in
            if (old := self._shards.get(name)) is not None:
                for key_id in old.keys:
                    keys.pop(key_id, None)
                for key_id in old.limits:
                    limits.pop(key_id, None)
        for name in changed:
            if (new := shards.get(name)) is not None:
                keys.update(new.keys)
                limits.update(new.limits)
        return keys, limits


def _gathered(shards: Iterable[KeyShard]) -> tuple[dict[str, KeyEntry], dict[str, Limits]]:
    keys: dict[str, KeyEntry] = {}
    limits: dict[str, Limits] = {}
    for shard in shards:
        keys.update(shard.keys)
        limits.update(shard.limits)
    return keys, limits
