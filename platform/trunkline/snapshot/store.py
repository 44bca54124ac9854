"""Where snapshots live between the control plane and the gateways.

A snapshot is stored as named parts (``snapshot.parts``: the core, and the keys in shards),
each with the digest of its bytes, under one version. Publishing is synchronous (the control
plane's services run in threads); reading is asynchronous (the gateway polls the version on its
event loop, and when it moved fetches the parts whose digest differs from those it holds).
Redis (``snapshot.redis_store``) writes a version's parts and version in one script; a reader
reads the version's list of digests in one transaction and then each part it lacks, keeping a
part only if its bytes hash to the listed digest, so it never serves a torn snapshot. Beside
them ``published_digest`` names the whole content, so a control plane can tell whether the
store already holds what the database says without fetching anything, and ``built_from`` the
configuration state the version was built from, so another control plane whose database is in
that state knows without building anything either (``vouch``: one that built the content from
the state it read, and found it stored, says so under a newer version).
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

LEGACY = "whole"
"""The one part of a snapshot an older control plane stored whole (``<prefix>:snapshot``)."""
CORE_PART = "core"
"""The part every snapshot in parts has (``snapshot.parts.CORE``)."""
MAX_VERSION = 2**53 - 1
"""The highest version the Redis store's scripts compare exactly (Lua numbers are doubles).
Versions are a clock in ms, which reaches it in the year 287,000: one above was written by
hand or by a tool (in nanoseconds, say), not handed out, and is not served (a gateway would
then ignore every version handed out) nor handed out above."""


@dataclass(frozen=True)
class Loaded:
    """A version as a reader fetched it."""

    version: int
    published_at: float
    digests: dict[str, bytes]
    """Every part of the version, by name: the digest of its bytes."""
    blobs: dict[str, bytes]
    """The bytes of the parts the reader did not hold (by digest); the others are unchanged."""


def part_digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def content_digest(digests: Mapping[str, bytes]) -> bytes:
    """One name for a snapshot's whole content, from its parts' digests."""
    whole = hashlib.sha256()
    for name in sorted(digests):
        whole.update(name.encode() + b"\0" + digests[name])
    return whole.digest()


@dataclass(frozen=True)
class BuiltFrom:
    """The configuration state a stored version was built from, as its publisher read it before
    reading anything else: the version holds every change counted up to ``generation`` (maybe
    more), and ``rest`` is the rest of that state, the publisher's to name (the price book
    version in force). The store keeps it with the version it came with, or none."""

    generation: int
    rest: str = ""
    alone: bool = field(default=False, compare=False)
    """Recorded as it is, not moved on by what the version it replaces was built from: for a
    publish of what the change count may not see (the start, the thorough check), after which
    the count may name less than the record did (a database restored from a backup), so that
    the record comes back to what the database says."""


class Recorded(NamedTuple):
    """The version a store holds and what it was built from (``SnapshotPublisher.built_from``)."""

    version: int
    built_from: BuiltFrom
    ahead: frozenset[int] = frozenset()
    """Generations above ``built_from``'s that patches stored past a gap carried: in the store,
    where the changes between are not known to be."""


AHEAD_CAP = 512
"""How many generations known stored above a record's a store keeps (dropping one forgets)."""


def advanced(generation: int, known: Collection[int]) -> tuple[int, frozenset[int]]:
    """``carried_to``, and the generations of ``known`` still above the one reached (those a
    record keeps as ``ahead``: stored past a gap, another control plane's change not yet in)."""
    reached = carried_to(generation, frozenset(known))
    return reached, frozenset(sorted(g for g in known if g > reached)[:AHEAD_CAP])


def carried_to(generation: int, carried: Collection[int]) -> int:
    """A patch over a version built from ``generation`` that carries the changes ``carried``
    holds every change up to the returned one: a gap stops it (a change not carried, another
    process's, may not be in it)."""
    while generation + 1 in carried:
        generation += 1
    return generation


class Patched(enum.Enum):
    """What became of a ``patch``."""

    STORED = "stored"
    REFUSED = "refused"
    """A version as new or newer is stored: publish again under a newer one."""
    NO_BASE = "no_base"
    """The store holds no whole snapshot of parts to patch (none, an older control plane's
    whole one, a part gone, or other publishers kept changing it): publish it whole."""


class SnapshotPublisher(Protocol):
    def next_version(self) -> int: ...
    def publish(
        self,
        version: int,
        parts: Mapping[str, bytes],
        *,
        published_at: float,
        built_from: BuiltFrom | None = None,
    ) -> bool:
        """Store ``parts`` as ``version``, built from ``built_from`` (None: not known), unless as
        new or a newer version is stored: whether it did. Its record is ``built_from`` moved on
        to the replaced version's and the furthest generation stored before it (unless
        ``built_from.alone``)."""
        ...

    def patch(
        self,
        version: int,
        changed: Mapping[str, bytes | None],
        *,
        published_at: float,
        carried: Collection[int] = (),
    ) -> Patched:
        """Store as ``version`` the parts stored, each exactly as it is stored now, with those
        ``changed`` replaced (None: removed); unless as new or a newer version is stored. It is
        built from what the version patched was, moved on by the changes (their generations)
        it ``carried`` (``carried_to``); from nothing known if that was not known."""
        ...

    def published_version(self) -> int | None:
        """The version the store holds (None: none, e.g. a store that lost its data)."""
        ...

    def published_digest(self) -> bytes | None:
        """The ``content_digest`` of what the store holds (None: no snapshot)."""
        ...

    def served_version(self) -> int | None:
        """The highest version a gateway reported serving while the store held an older one
        (``SnapshotSource.report_served``; None: none reported). No publisher may remember it
        (Redis lost its data and every control plane restarted, the version handed out under a
        clock that was ahead): the gateways keep it until one newer is stored, and the next
        versions handed out are above it."""
        ...

    def built_from(self) -> Recorded | None:
        """The version the store holds and what it was built from (None: no version, or not
        known: stored by a publisher that did not say, such as an older control plane)."""
        ...

    def vouch(self, version: int, content: bytes, new: int, built_from: BuiltFrom) -> bool:
        """If the store still holds ``version``, its ``content_digest`` ``content``: store it
        again as ``new``, a newer version, unchanged (a reader fetches no part), built from
        ``built_from``; whether it did. For a publisher that found the content equal to what it
        built from that state: ``new`` must be handed out (``next_version``) after the state
        was read. Never recorded on ``version`` itself: a patch whose version was handed out
        before a change in that state committed (its shards read without it) can still be
        stored over ``version``, and would carry the record on, claiming that change; it is
        refused over ``new``."""
        ...


class SnapshotSource(Protocol):
    async def version(self) -> int | None: ...
    async def load(self, held: Mapping[str, bytes] | None = None) -> Loaded | None:
        """The stored version, with the bytes of each part whose digest is not the one
        ``held`` names (None: no snapshot)."""
        ...

    async def report_served(self, version: int) -> None:
        """Tell the publishers that a gateway serves ``version`` while the store holds an older
        one (``SnapshotPublisher.served_version``)."""
        ...


class InMemorySnapshotStore:
    """Both ends in one process (embedded mode and unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counter = 0
        self._current: Loaded | None = None
        """The version held, with every part's bytes."""
        self._from: BuiltFrom | None = None
        """What the version held was built from."""
        self._ahead: frozenset[int] = frozenset()
        """Generations known stored above ``_from``'s (see ``advanced``)."""

    def next_version(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def publish(
        self,
        version: int,
        parts: Mapping[str, bytes],
        *,
        published_at: float,
        built_from: BuiltFrom | None = None,
    ) -> bool:
        with self._lock:
            if self._current is not None and version <= self._current.version:
                return False
            digests = {name: part_digest(blob) for name, blob in parts.items()}
            self._current = Loaded(version, published_at, digests, dict(parts))
            self._record(built_from, (), whole=True)
            return True

    def patch(
        self,
        version: int,
        changed: Mapping[str, bytes | None],
        *,
        published_at: float,
        carried: Collection[int] = (),
    ) -> Patched:
        with self._lock:
            current = self._current
            if current is None or LEGACY in current.digests:
                return Patched.NO_BASE
            if version <= current.version:
                return Patched.REFUSED
            parts = {**current.blobs, **changed}
            blobs = {name: blob for name, blob in parts.items() if blob is not None}
            digests = {name: part_digest(blob) for name, blob in blobs.items()}
            self._current = Loaded(version, published_at, digests, blobs)
            if self._from is not None:  # else nothing is known of it, nor of this one
                self._record(self._from, carried)
            return Patched.STORED

    def published_version(self) -> int | None:
        current = self._current
        return None if current is None else current.version

    def published_digest(self) -> bytes | None:
        current = self._current
        return None if current is None else content_digest(current.digests)

    def served_version(self) -> int | None:
        return None  # its versions never go back: its readers live and die with it

    def built_from(self) -> Recorded | None:
        with self._lock:
            if self._current is None or self._from is None:
                return None
            return Recorded(self._current.version, self._from, self._ahead)

    def vouch(self, version: int, content: bytes, new: int, built_from: BuiltFrom) -> bool:
        with self._lock:
            current = self._current
            if current is None or current.version != version or new <= version:
                return False
            if content_digest(current.digests) != content:
                return False
            self._current = replace(current, version=new)
            self._record(built_from, ())
            return True

    def _record(
        self, built_from: BuiltFrom | None, carried: Collection[int], *, whole: bool = False
    ) -> None:
        """The new version's record: ``built_from`` moved on through what the held one knew
        (every later version holds what an earlier one holds; not when ``alone``) and
        ``carried``. A ``whole`` build read the database after every change the patches stored
        before it carried (each got its version after they committed, and before the build's),
        so it holds every change up to the highest of them."""
        if built_from is None:
            self._from, self._ahead = None, frozenset()
            return
        start, known = built_from.generation, frozenset(carried)
        if self._from is not None and not built_from.alone:
            start = max(start, self._from.generation)
            if whole:
                start = max([start, *self._ahead])
            else:
                known |= self._ahead
        reached, self._ahead = advanced(start, known)
        self._from = BuiltFrom(reached, built_from.rest)

    async def version(self) -> int | None:
        return self.published_version()

    async def report_served(self, version: int) -> None:
        pass  # never behind: see ``served_version``

    async def load(self, held: Mapping[str, bytes] | None = None) -> Loaded | None:
        current = self._current
        if current is None:
            return None
        held = held or {}
        blobs = {n: b for n, b in current.blobs.items() if held.get(n) != current.digests[n]}
        return Loaded(current.version, current.published_at, current.digests, blobs)


class IncompleteSnapshot(LookupError):
    """The store's version lacks parts (evicted, deleted by hand) or they kept changing while
    read: the reader keeps what it holds, and the control plane's check publishes again."""
