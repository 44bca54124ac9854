"""Where snapshots live between the control plane and the gateways.

Publishing is synchronous (the control plane's services run in threads);
reading is asynchronous (the gateway polls the version on its event loop and
fetches the blob only when it changed). Redis keeps ``<prefix>:snapshot`` and
``<prefix>:snapshot:version`` in one MULTI so readers never see a torn pair, and beside them
``<prefix>:snapshot:digest``, a digest of the published content (``published_digest``), so
a control plane can tell whether the store already holds what the database says without
fetching the blob.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
import redis.asyncio as aioredis


class SnapshotPublisher(Protocol):
    def next_version(self) -> int: ...
    def publish(self, version: int, blob: bytes, digest: bytes = b"") -> None:
        """Store ``blob`` as ``version`` unless a newer one is stored; ``digest`` names its
        content (``snapshot.builder.content_digest``), whatever its version."""
        ...

    def published_version(self) -> int | None:
        """The version the store holds (None: none, e.g. a store that lost its data)."""
        ...

    def published_digest(self) -> bytes | None:
        """The digest of what the store holds (None: no snapshot, or one published without)."""
        ...


class SnapshotSource(Protocol):
    async def version(self) -> int | None: ...
    async def load(self) -> tuple[int, bytes] | None: ...


class InMemorySnapshotStore:
    """Both ends in one process (embedded mode and unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = 0
        self._current: tuple[int, bytes] | None = None
        self._digest: bytes | None = None

    def next_version(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def publish(self, version: int, blob: bytes, digest: bytes = b"") -> None:
        with self._lock:
            if self._current is None or version > self._current[0]:
                self._current = (version, blob)
                self._digest = digest or None

    def published_version(self) -> int | None:
        current = self._current
        return None if current is None else current[0]

    def published_digest(self) -> bytes | None:
        return self._digest

    async def version(self) -> int | None:
        current = self._current
        return None if current is None else current[0]

    async def load(self) -> tuple[int, bytes] | None:
        return self._current


# Publish only when newer than what is stored, atomically: two control-plane
# replicas publishing at once can never move the version backwards.
_PUBLISH_LUA = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[3])
  return 1
end
return 0
"""


# The next version: one more than the last, and never below the publisher's clock in ms, so a
# Redis that restarted empty (its counter back at 0) still hands out versions above those the
# gateways hold, and they load the next snapshot instead of taking it for the one they have.
_NEXT_VERSION_LUA = """
local version = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if version < floor then
  redis.call('SET', KEYS[1], floor)
  version = floor
end
return version
"""


class RedisSnapshotPublisher:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "trunkline",
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._client = client
        self._blob_key = f"{prefix}:snapshot"
        self._version_key = f"{prefix}:snapshot:version"
        self._counter_key = f"{prefix}:snapshot:counter"
        self._digest_key = f"{prefix}:snapshot:digest"
        self._script = client.register_script(_PUBLISH_LUA)
        self._next = client.register_script(_NEXT_VERSION_LUA)
        self._clock_ms = clock_ms

    def next_version(self) -> int:
        return int(self._next(keys=[self._counter_key], args=[self._clock_ms()]))

    def publish(self, version: int, blob: bytes, digest: bytes = b"") -> None:
        keys = [self._blob_key, self._version_key, self._digest_key]
        self._script(keys=keys, args=[version, blob, digest])

    def published_version(self) -> int | None:
        raw = self._client.get(self._version_key)
        return None if raw is None else int(raw)

    def published_digest(self) -> bytes | None:
        """None also when the store holds no snapshot (the digest outlived a lost blob)."""
        version, digest = self._client.mget(self._version_key, self._digest_key)
        if version is None or not digest:
            return None
        return digest if isinstance(digest, bytes) else digest.encode("latin-1")


class RedisSnapshotSource:
    def __init__(self, client: aioredis.Redis, prefix: str = "trunkline") -> None:
        self._client = client
        self._blob_key = f"{prefix}:snapshot"
        self._version_key = f"{prefix}:snapshot:version"

    async def version(self) -> int | None:
        raw = await self._client.get(self._version_key)
        return None if raw is None else int(raw)

    async def load(self) -> tuple[int, bytes] | None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._version_key)
            pipe.get(self._blob_key)
            version, blob = await pipe.execute()
        if version is None or blob is None:
            return None
        return int(version), bytes(blob)
