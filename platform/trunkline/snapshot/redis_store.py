"""The snapshot store in Redis: one Lua script (``snapshot.redis_scripts``) writes a version's
parts, their digests and the version (never backwards); readers fetch a version's digests in one
transaction, then the parts they lack. See ``snapshot.store`` for the contract both stores
keep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from trunkline.snapshot import redis_scripts
from trunkline.snapshot.redis_scripts import Arg, Script
from trunkline.snapshot.store import (
    CORE_PART,
    LEGACY,
    MAX_VERSION,
    BuiltFrom,
    IncompleteSnapshot,
    Loaded,
    Patched,
    Recorded,
    content_digest,
    part_digest,
)


class _Keys:
    """The Redis keys of a prefix's snapshot. ``<prefix>:snapshot`` and its ``:version`` are
    where control planes before the parts stored a whole snapshot: read until one of these
    publishes, so gateways may be upgraded first."""

    def __init__(self, prefix: str) -> None:
        base = f"{prefix}:snapshot:v2"
        self.version, self.at, self.digest = f"{base}:version", f"{base}:at", f"{base}:digest"
        self.built_from = f"{base}:built_from"
        self.parts, self.part_prefix = f"{base}:parts", f"{base}:part:"
        self.counter = f"{prefix}:snapshot:counter"
        self.served = f"{prefix}:snapshot:served"
        self.legacy_blob, self.legacy_version = f"{prefix}:snapshot", f"{prefix}:snapshot:version"
        self.named = {
            "version_key": self.version,
            "at_key": self.at,
            "digest_key": self.digest,
            "parts_key": self.parts,
            "built_from_key": self.built_from,
            "counter_key": self.counter,
            "legacy_version_key": self.legacy_version,
            "served_key": self.served,
        }
        """Every key a script names, by the name it reads it as."""


class RedisSnapshotPublisher:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "trunkline",
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._client = client
        self._keys = _Keys(prefix)
        self._registered = {
            script: client.register_script(script.lua)
            for script in (
                redis_scripts.PUBLISH,
                redis_scripts.VOUCH,
                redis_scripts.DIGEST,
                redis_scripts.NEXT_VERSION,
            )
        }
        self._clock_ms = clock_ms
        self._seen = 0
        """The highest version this publisher handed out or read stored: ``next_version``
        stays above it, whatever its clock says (``_saw``)."""
        self._seen_lock = threading.Lock()

    def _saw(self, version: int | bytes | str | None) -> int | None:
        """``version`` (read from the store, or handed out), as an int, remembered when it is
        the highest yet: another publisher's clock may be ahead of this one's, and a Redis that
        lost its data would otherwise get versions from this one below those the gateways
        hold, which they ignore until this clock passes them."""
        if version is None:
            return None
        number = int(version)
        if number <= MAX_VERSION:  # else not handed out: above it, versions go wrong
            with self._seen_lock:
                self._seen = max(self._seen, number)
        return number

    def _run(self, script: Script, args: dict[str, Arg], rest: Sequence[Arg] = ()) -> Any:
        named = {name: key for name, key in self._keys.named.items() if name in script.keys}
        keys, argv = script.call_args(named, args, rest)
        return self._registered[script](keys=keys, args=argv)

    def next_version(self) -> int:
        floor = max(self._clock_ms(), self._seen + 1)
        version = int(self._run(redis_scripts.NEXT_VERSION, {"floor": floor}))
        self._saw(version)
        return version

    def publish(
        self,
        version: int,
        parts: Mapping[str, bytes],
        *,
        published_at: float,
        built_from: BuiltFrom | None = None,
    ) -> bool:
        """Sends the bytes of only the parts the store does not hold already."""
        digests = {name: part_digest(blob) for name, blob in parts.items()}
        stored, _content = self._stored_digests()
        for send_all in (False, True):
            sent = {
                name: b"" if not send_all and stored.get(name) == digests[name] else blob
                for name, blob in parts.items()
            }
            outcome = self._write(version, published_at, digests, sent, built_from=built_from)
            if outcome != -1:
                return outcome == 1
        return False  # not reached: with every part's bytes the script never answers -1

    PATCH_TRIES = 3

    def patch(
        self,
        version: int,
        changed: Mapping[str, bytes | None],
        *,
        published_at: float,
        carried: Collection[int] = (),
    ) -> Patched:
        """Names every stored part by the digest read here, its bytes not sent; the script
        refuses (-1) if one no longer has it (another publisher wrote in between, or the part
        is gone), and it is read again."""
        changed_digests = {n: part_digest(b) for n, b in changed.items() if b is not None}
        for _ in range(self.PATCH_TRIES):
            stored, content = self._stored_digests()
            if CORE_PART not in stored or content is None:
                return Patched.NO_BASE
            digests = {n: d for n, d in stored.items() if n not in changed} | changed_digests
            sent = {n: changed.get(n) or b"" for n in digests}
            outcome = self._write(
                version, published_at, digests, sent, base=content, carried=carried
            )
            if outcome != -1:
                return Patched.STORED if outcome == 1 else Patched.REFUSED
        return Patched.NO_BASE

    def _stored_digests(self) -> tuple[dict[str, bytes], bytes | None]:
        """The stored parts' digests and the content digest they make, read together; no
        content when an older control plane's whole snapshot is newer (the gateways serve it,
        and a patch over the parts would put back what it changed)."""
        with self._client.pipeline(transaction=True) as reads:
            reads.hgetall(self._keys.parts)
            reads.get(self._keys.digest)
            reads.get(self._keys.version)
            reads.get(self._keys.legacy_version)
            listed, content, version, legacy = reads.execute()
        self._saw(version)
        if legacy is not None and int(legacy) > int(version or 0):
            content = None
        return {_bytes(n).decode(): _bytes(d) for n, d in listed.items()}, content

    def _write(
        self,
        version: int,
        published_at: float,
        digests: dict[str, bytes],
        sent: dict[str, bytes],
        *,
        base: bytes = b"",
        built_from: BuiltFrom | None = None,
        carried: Collection[int] = (),
    ) -> int:
        """One run of the script: 1 stored, 0 refused (not newer), -1 a part named by its
        digest alone (``sent`` empty) not stored with it, or the content not ``base`` (a
        patch's, read with its parts) any more."""
        args: dict[str, Arg] = {
            "version": version,
            "at": repr(published_at),
            "content": content_digest(digests),
            "part_prefix": self._keys.part_prefix,
            "base": base,
            "generation": "" if built_from is None else built_from.generation,
            "rest": "" if built_from is None else built_from.rest,
            "alone": "1" if built_from is not None and built_from.alone else "",
            "carried": " ".join(str(generation) for generation in carried),
        }
        parts = [x for name, digest in digests.items() for x in (name, digest, sent[name])]
        return int(self._run(redis_scripts.PUBLISH, args, parts))

    def published_version(self) -> int | None:
        version, served = self._client.mget(self._keys.version, self._keys.served)
        self._saw(served)
        return self._saw(version)

    def served_version(self) -> int | None:
        served = self._saw(self._client.get(self._keys.served))
        return None if served is None or served > MAX_VERSION else served

    def published_digest(self) -> bytes | None:
        """None also when a part of the stored version is gone: publishing again restores it."""
        digest = self._run(redis_scripts.DIGEST, {"part_prefix": self._keys.part_prefix})
        return _bytes(digest) if digest else None

    def vouch(self, version: int, content: bytes, new: int, built_from: BuiltFrom) -> bool:
        args: dict[str, Arg] = {
            "version": version,
            "content": content,
            "new": new,
            "generation": built_from.generation,
            "rest": built_from.rest,
            "alone": "1" if built_from.alone else "",
        }
        return bool(self._run(redis_scripts.VOUCH, args))

    def built_from(self) -> Recorded | None:
        with self._client.pipeline(transaction=True) as both:
            both.get(self._keys.version)
            both.hmget(self._keys.built_from, ["version", "generation", "rest", "ahead"])
            version, (tagged, generation, rest, ahead) = both.execute()
        self._saw(version)
        if version is None or tagged != version or generation is None:
            return None  # none, or written with an older version: not this one's
        built_from = BuiltFrom(int(generation), _bytes(rest or b"").decode())
        above = frozenset(int(g) for g in _bytes(ahead or b"").split())
        return Recorded(int(version), built_from, above)


class RedisSnapshotSource:
    """Reads a version's digests in one step, then its parts one command each (Redis serves
    other clients between them: a 12 MB read in one script held it for 15-76 ms), and keeps
    a part only if its bytes have the digest listed: a publish in between is read again."""

    TRIES = 3

    def __init__(self, client: aioredis.Redis, prefix: str = "trunkline") -> None:
        self._client = client
        self._keys = _Keys(prefix)
        self._report = client.register_script(redis_scripts.REPORT_SERVED.lua)

    async def report_served(self, version: int) -> None:
        keys, args = redis_scripts.REPORT_SERVED.call_args(
            {"served_key": self._keys.served}, {"version": version}
        )
        await self._report(keys=keys, args=args)

    async def version(self) -> int | None:
        """The newer of the parts' version and an older control plane's whole snapshot's (a
        rollback, or old and new control planes side by side during an upgrade)."""
        current, legacy = await self._client.mget(self._keys.version, self._keys.legacy_version)
        found = [int(raw) for raw in (current, legacy) if raw is not None]
        return max(found) if found else None

    async def load(self, held: Mapping[str, bytes] | None = None) -> Loaded | None:
        k, held = self._keys, held or {}
        fetched: dict[str, bytes] = {}  # verified parts, kept from one try to the next
        for _ in range(self.TRIES):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(k.version)
                pipe.get(k.at)
                pipe.hgetall(k.parts)
                pipe.get(k.legacy_version)
                version, at, listed, legacy = await pipe.execute()
            if legacy is not None and (version is None or int(legacy) > int(version)):
                return await self._load_legacy(held)
            if version is None:
                return None
            digests = {_bytes(n).decode(): _bytes(d) for n, d in listed.items()}
            if not digests or at is None:
                raise IncompleteSnapshot(f"snapshot version {int(version)} lists no part")
            fetched = {n: b for n, b in fetched.items() if part_digest(b) == digests.get(n)}
            wanted = [n for n, d in digests.items() if held.get(n) != d and n not in fetched]
            async with self._client.pipeline(transaction=False) as pipe:
                for name in wanted:
                    pipe.get(k.part_prefix + name)
                blobs = await pipe.execute() if wanted else []
            gone = [n for n, b in zip(wanted, blobs, strict=True) if b is None]
            if gone:  # lost (or an emptied shard a publish in between dropped: the next poll)
                raise IncompleteSnapshot(f"snapshot parts missing from Redis: {gone}")
            for name, blob in zip(wanted, blobs, strict=True):
                if part_digest(bytes(blob)) == digests[name]:
                    fetched[name] = bytes(blob)
            if all(n in fetched for n in wanted):
                return Loaded(int(version), float(at), digests, fetched)
        changing = [n for n in wanted if n not in fetched]
        raise IncompleteSnapshot(f"snapshot parts changing while read: {changing}")

    async def _load_legacy(self, held: Mapping[str, bytes]) -> Loaded | None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.legacy_version)
            pipe.get(self._keys.legacy_blob)
            version, blob = await pipe.execute()
        if version is None or blob is None:
            return None
        digest = part_digest(bytes(blob))
        blobs = {} if held.get(LEGACY) == digest else {LEGACY: bytes(blob)}
        return Loaded(int(version), 0.0, {LEGACY: digest}, blobs)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
