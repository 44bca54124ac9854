"""Publishing each committed change to the gateways' snapshot store, from every process that
commits them (control planes, the CLI, the embedded launcher): by the shards of the keys it
changed, or whole; another control plane's changes, stored or not yet, taken into account."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import redis
from sqlalchemy.orm import Session, sessionmaker

from trunkline.apps.change_gaps import key_gap, rest_keys_only
from trunkline.apps.config_state import ConfigState, read_config_state
from trunkline.apps.publish_metrics import PublishMetrics
from trunkline.apps.store_outage import StoreOutage
from trunkline.kit.ids import utcnow
from trunkline.kit.shards import SHARDS, key_shard
from trunkline.snapshot import SnapshotPublisher
from trunkline.snapshot.builder import current_digest, publish_snapshot
from trunkline.snapshot.key_shards import build_key_parts, expired_shards
from trunkline.snapshot.store import Patched, carried_to
from trunkline.tenancy.changes import (
    WHOLE,
    Change,
    config_generation,
)

log = logging.getLogger(__name__)


PUBLISH_TRIES = 3
SHARD_TRIES = 8
"""A patch refused this many times (another control plane stored a newer version between
its version and its write, each time) is published whole; a patch costs milliseconds, a whole
build a second at 19,000 keys, and is refused by the next patch all the same."""
Published = Literal["stored", "held", "refused"]
"""What became of a whole publish (``ChangePublisher.publish_now``)."""
"""Publishes of one change refused because another process stored a newer version first."""

WHOLE_ABOVE = SHARDS // 4
"""Keys changed in more shards than this (a batch of them) are published by a whole build."""

WHOLE_EVERY_S = 2.0
"""A key change that follows changes not known to be in the store (another process's) is
published whole if this process stored no whole build for this long
(``ChangePublisher._follows``)."""


@dataclass(kw_only=True)
class ChangePublisher:
    """Publishes each committed change to the gateways' snapshot store: a change confined to
    keys by the shards that hold them, any other by building the whole configuration again;
    and keeps what it knows of what the store holds, for the check (``apps.publishing``)."""

    session_factory: sessionmaker[Session]
    publisher: SnapshotPublisher
    server_secret: bytes
    seen: ConfigState | None = None
    """The configuration state (``config_state``) of what this process last published, or
    found the snapshot store holding: read before the build, so the build has at least it."""
    published_version: int | None = None
    """The version this process last published: a store holding an older one was restored
    from a backup (or failed over to a lagging replica) and must be published to again."""
    publishing: threading.Lock = field(default_factory=threading.Lock)
    """Held by whoever builds and publishes: one build at a time in this process."""
    built_at: datetime | None = None
    """When the last build this process published read the database: every key expired by
    then is out of the snapshot stored (a shard rebuilt since only drops more)."""
    whole_every_s: float = WHOLE_EVERY_S
    metrics: PublishMetrics = field(default_factory=PublishMetrics)
    """What its publishing did, for the control plane's ``/metrics``."""
    outage: StoreOutage = field(default_factory=StoreOutage)
    """Whether a call to Redis failed lately: publishes then leave their change to the check
    (``publish``). The control plane's quota usage reads, on the same Redis, share it
    (``apps.controlplane.quota_usage``)."""
    _whole_at: float | None = field(init=False, repr=False, default=None)
    """When (monotonic) this process last stored a whole build."""
    _pending: list[Change] = field(init=False, repr=False, default_factory=list)
    """Changes committed, waiting for a publish (guarded by ``_pending_lock``)."""
    _pending_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)
    left: bool = field(init=False, repr=False, default=False)
    """A change of this process's that the change count counts may not be in the store: its
    publish failed, was refused every time, or was left to the check while the store did not
    answer. A key change then carries it by the shards of every change the store lacks, if they
    are all key changes (``key_gap``); else a whole build does."""
    left_whole: bool = field(init=False, repr=False, default=False)
    """As ``left``, for what the count may not see (the start's publish, a thorough check's, a
    change whose generation is not known): only a whole build stored carries it."""
    checks_skipped: int = field(init=False, repr=False, default=0)
    """Checks in a row that found a publish under way (``apps.publishing``)."""
    awaited: frozenset[int] = field(init=False, repr=False, default=frozenset())
    """The changes the store's record lacked when the last check left them to the control
    plane publishing them (``apps.publishing``): the next check that finds one still missing
    patches them in. Only the first was remembered: when it landed and another, dead, stayed
    missing (a CLI's revocation whose publish failed), a third check carried it, 2 s later."""
    _carried: set[int] = field(init=False, repr=False, default_factory=set)
    """Generations above ``seen``'s that this process published by their keys' shards: once
    every generation up to one is, ``seen`` moves there (a gap is another process's change)."""

    def publish(self, change: Change = WHOLE) -> None:
        """Publish ``change`` to every gateway, after it committed: by the shards of its keys
        when it changed only keys, else the whole configuration again.

        A snapshot store that cannot take it (Redis away, read-only) neither fails nor undoes
        the change: a warning says so, and the control plane publishes it once the store
        answers again (``republish_if_stale``). Raising here would report a saved change as
        failed (an API caller retrying a key creation would get a second key). After a call to
        the store failed (``outage``), the change is left to that check at once: a store that
        does not answer held each write for the client's timeout.
        """
        try:
            if change.generation is None:
                with self.session_factory() as session:  # the caller's change, at least
                    change = Change(config_generation(session), change.keys, exact=False)
            with self._pending_lock:
                self._pending.append(change)
            if self.outage.suspected():
                self._left_to_the_check(change)
                return
            with self.publishing:
                if self.outage.suspected():  # found by the publish or check waited for
                    self._left_to_the_check(change)
                    return
                # Changes committed in parallel (a bulk of API calls) wait for one build at a
                # time, which carries every change waiting when it starts.
                with self._pending_lock:
                    waiting, self._pending = self._pending, []
                with self.outage.watch():
                    try:
                        self._publish_changes(waiting)
                    except Exception:  # said before the lock is free: a check waits on it
                        self.mark_left(counted=all(c.exact for c in waiting))
                        raise
        except redis.RedisError as exc:
            log.warning(
                "the gateways' snapshot could not be published (%s); what the database holds is "
                "saved, and the control plane publishes it once the snapshot store answers",
                exc,
            )

    def _left_to_the_check(self, change: Change) -> None:
        """The change stays waiting (the next publish carries it) and the check publishes it
        once the store answers (it looks at the database, whatever waits here). Counted, not
        logged: ``outage`` logs the outage's start and end once each."""
        self.mark_left(counted=change.exact and change.generation is not None)
        self.metrics.left_to_check("shards" if change.keys is not None else "whole")

    def _publish_changes(self, changes: list[Change]) -> None:
        seen = self.seen.generation if self.seen is not None else None
        # one that a whole build started after its commit already carried is done
        changes = [
            c for c in changes if seen is None or c.generation is None or c.generation > seen
        ]
        if not changes:
            return
        keys: set[str] = set()
        counted = all(c.exact for c in changes)
        for change in changes:
            if change.keys is None:
                self._carry(self.publish_now(counted=counted) != "refused", counted)
                return
            keys |= change.keys
        shards = {key_shard(key_id) for key_id in keys}
        exact = {c.generation for c in changes if c.exact and c.generation is not None}
        was_left = self._carry_left_too(exact, shards) if counted else False
        if len(shards) > WHOLE_ABOVE or len(exact) < len(changes) or not self._may_patch(exact):
            self._carry(self.publish_now(counted=counted) != "refused", counted, was_left)
            return
        self._carry(self.publish_shards(shards, exact), counted, was_left)

    def _carry_left_too(self, generations: set[int], shards: set[int]) -> bool:
        """When one of this process's own counted changes may be missing (``left``, not
        ``left_whole``) and every change the store lacks up to now is a key change
        (``key_gap``), add them and their shards to the patch, which carries them (it reads
        them after its version is handed out); whether ``left`` was so cleared."""
        if not self.left or self.left_whole:
            return False
        with self.session_factory() as session:
            top = config_generation(session)
        recorded = self.publisher.built_from()
        gap = None if top is None else key_gap(recorded, self.session_factory, top)
        if gap is None:
            return False
        self.left = False
        generations |= set(gap[0])
        shards |= gap[1]
        return True

    def _carry(self, stored: bool, counted: bool, was_left: bool = False) -> None:
        """After publishing this process's changes: when nothing was stored (refused every
        time), they may be missing, and what was left before still is."""
        if not stored:
            self.left = self.left or was_left
            self.mark_left(counted=counted)

    def mark_left(self, *, counted: bool) -> None:
        """A change of this process's may be missing from the store (``left``, ``left_whole``)."""
        if counted:
            self.left = True
        else:
            self.left_whole = True

    def _may_patch(self, generations: set[int]) -> bool:
        """Every change committed before ``generations`` is known to be in the store, or to
        have changed keys only, or this process stored a whole build less than
        ``whole_every_s`` ago.

        A change not known so is another process's (or one this process committed a moment
        ago, not waiting yet), perhaps a tenant or tier change still being published: its whole
        build, refused by each newer patch, would build again and again while this process
        kept patching over the core it has not, and never reach the gateways. A whole build
        here carries it. Another process's key change is patched in by that process, so it
        holds nothing up (``rest_keys_only``): with two control planes taking key changes, one
        of the other's was nearly always committed and not yet stored, and each built whole at
        every write, refusing the other's builds. At most one whole build a ``whole_every_s``
        bounds how long another kind of change can be kept out, at little cost."""
        if self._follows(generations):
            return True
        if self.left or self.left_whole:  # one of its own may be missing: a whole build carries it
            return False
        seen = None if self.seen is None else self.seen.generation
        if rest_keys_only(
            self.publisher, self.session_factory, generations, seen=seen, carried=self._carried
        ):
            return True
        return self._whole_at is not None and time.monotonic() - self._whole_at < self.whole_every_s

    def known_stored(self, generation: int) -> bool:
        """Whether the store held the change that set ``generation`` when this process last
        looked (``seen``) or patched it in (``_carried``)."""
        seen = None if self.seen is None else self.seen.generation
        return (seen is not None and generation <= seen) or generation in self._carried

    def _follows(self, generations: set[int]) -> bool:
        """Whether every change committed before ``generations`` is known to be in the store
        (``seen``, or carried by this process's patches)."""
        if self.seen is None or self.seen.generation is None:
            return False
        return carried_to(self.seen.generation, self._carried | generations) >= max(generations)

    def publish_shards(self, shards: set[int], generations: Collection[int] = ()) -> bool:
        """Publish the key ``shards`` rebuilt, with the shards of keys expired since the last
        build, every other part as the store holds it; published whole when the store holds
        none to patch. ``generations``: the changes this carries (none: keys expired, which the
        change count does not count). Whether the store holds it (``publish_now``'s when it
        falls back to a whole build); raises when the store fails. The caller holds
        ``publishing``."""
        counted = bool(generations)
        stored, served = self.publisher.published_version(), self.publisher.served_version()
        held = max(self.published_version or 0, served or 0)
        if held and (stored or 0) < held:
            # Older than what this process published or found stored, or than a gateway serves
            # (another process published it): Redis restored from a backup, or failed over to
            # a lagging replica. A patch would serve its other parts again (keys revoked
            # since) under a newer version.
            log.warning("the snapshot store holds an older snapshot; publishing it whole")
            return self.publish_now(counted=counted) != "refused"
        for _ in range(SHARD_TRIES):
            with self.metrics.building("shards") as build:
                version = build.version = self.publisher.next_version()  # before the reads
                now = utcnow()
                with self.session_factory() as session:
                    if self.built_at is not None:
                        shards = shards | expired_shards(session, self.built_at, now)
                    parts = build_key_parts(session, shards, now=now)
                outcome = self.publisher.patch(
                    version, parts, published_at=time.time(), carried=generations
                )
                build.outcome = outcome.value
            if outcome is Patched.NO_BASE:
                break
            if outcome is Patched.STORED:
                self.published_version, self.built_at = version, now
                self._carried.update(generations)
                if self.seen is not None:
                    self._saw(self.seen)
                return True
            # REFUSED: another process stored a newer version, which may not hold these
            # shards' change (it rebuilt others): again, under a newer one
        return self.publish_now(counted=counted) != "refused"

    def publish_now(self, *, counted: bool = False) -> Published:
        """Publish the current configuration whole: ``stored`` by this process, ``held`` by a
        newer version another stored, built from this state or later (only for ``counted``
        changes, those the change count counts: the store's record is that count, so it cannot
        vouch for what the count does not see, such as SQL by hand, which a thorough check or
        the start publishes; or refused every time while the store holds what the database
        says), or ``refused`` ``PUBLISH_TRIES`` times, other control planes storing newer
        versions each time; raises when the snapshot store fails. The caller
        holds ``publishing``, or publishes at start before anything else can."""
        was = self.left, self.left_whole
        self.left = self.left_whole = False  # what it reads carries every change left so far
        published: Published = "refused"  # (should it raise)
        matched = False
        try:
            published, matched = self._publish_whole(counted)
        finally:
            if published == "refused":  # nothing stored: what was left still is
                self.left, self.left_whole = self.left or was[0], self.left_whole or was[1]
            elif published == "held" and not matched:  # a newer version, perhaps a patch
                self.left_whole = self.left_whole or was[1]
        return published

    def _publish_whole(self, counted: bool) -> tuple[Published, bool]:
        """``publish_now``'s outcome, and whether the store was found holding what the database
        says (a ``held`` that carries even what the change count does not see)."""
        for _ in range(PUBLISH_TRIES):
            now = utcnow()
            state = read_config_state(self.session_factory)  # before the build: it has this
            with self.metrics.building("whole") as build:
                version, stored = publish_snapshot(
                    self.session_factory,
                    self.publisher,
                    cache_secret=self.server_secret,
                    now=now,
                    built_from=state.as_built_from(alone=not counted),
                )
                build.version, build.outcome = version, "stored" if stored else "refused"
            if stored:  # not when another process stored a newer version meanwhile
                self.published_version, self.built_at = version, now
                self._whole_at = time.monotonic()
                self._saw(state)
                return "stored", True
            if counted and self._stored_elsewhere(state):
                return "held", False
        return ("held", True) if self._refused_every_time() else ("refused", False)

    def _stored_elsewhere(self, state: ConfigState) -> bool:
        """Whether the newer version that refused this process's build says it was built from
        ``state`` or later (``built_from``): it then holds every change this build would
        have, and building again to be stored over it would only cost (under key changes
        through two control planes, each write built whole three times, seconds a write)."""
        recorded, ours = self.publisher.built_from(), state.as_built_from()
        if recorded is None or ours is None:
            return False
        if (
            recorded.built_from.generation < ours.generation
            or recorded.built_from.rest != ours.rest
        ):
            return False
        self.published_version = max(self.published_version or 0, recorded.version)
        self._saw(state)
        return True

    def _refused_every_time(self) -> bool:
        """Say what a whole publish refused ``PUBLISH_TRIES`` times means: nothing alarming when
        the store holds what the database says all the same (another control plane stored a
        whole build read after this change committed, which has it: True); else that the change
        may not be at the gateways yet, and what publishes it. The caller holds
        ``publishing``."""
        state = read_config_state(self.session_factory)  # before the build: it has this
        current = current_digest(self.session_factory, cache_secret=self.server_secret)
        if self.publisher.published_digest() == current:  # read after it
            self._saw(state)
            self.published_version = self.publisher.published_version()
            log.info("other control planes stored newer snapshots, holding this configuration")
            return True
        log.warning(
            "the gateways may not have the latest configuration yet: other control planes "
            "stored newer snapshots before each of this process's %d tries, and the snapshot "
            "store does not hold what the database says now; it is saved, and the control "
            "plane's check publishes it within seconds",
            PUBLISH_TRIES,
        )
        return False

    def _saw(self, state: ConfigState) -> None:
        """The store holds at least ``state``, and the changes carried since, in a row."""
        generation = state.generation
        if generation is not None:
            generation = carried_to(generation, self._carried)
            self._carried = {g for g in self._carried if g > generation}
            with self._pending_lock:  # carried: what waits from an outage need not
                self._pending = [
                    c for c in self._pending if c.generation is None or c.generation > generation
                ]
        self.seen = ConfigState(generation, state.prices_since)
