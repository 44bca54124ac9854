"""Which snapshot shard holds an API key: one rule for the control plane's database (the key
row's ``shard`` column, so a shard's keys are read without reading every key) and for the
parts it publishes (``snapshot.parts``)."""

from __future__ import annotations

import zlib

SHARDS = 64


def key_shard(key_id: str) -> int:
    """Stable across processes and releases (``crc32``, not ``hash()``): stored in the database
    and named in Redis. Migration ``0014`` computes it the same way for the keys before it."""
    return zlib.crc32(key_id.encode()) % SHARDS
