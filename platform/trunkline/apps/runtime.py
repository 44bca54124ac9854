"""Shared wiring for every process: database, snapshot publisher, server secret."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from trunkline.apps.publish_metrics import PublishMetrics
from trunkline.apps.store_outage import StoreOutage
from trunkline.billing.service import prices_in_force_since
from trunkline.errors import ConfigurationError
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.ids import utcnow
from trunkline.kit.migrate import ensure_sqlite_dir, require_current
from trunkline.kit.shards import SHARDS, key_shard
from trunkline.settings import Settings
from trunkline.snapshot import InMemorySnapshotStore, RedisSnapshotPublisher, SnapshotPublisher
from trunkline.snapshot.builder import current_digest, publish_snapshot
from trunkline.snapshot.key_shards import build_key_parts, expired_shards
from trunkline.snapshot.store import BuiltFrom, Patched, carried_to
from trunkline.tenancy.changes import (
    WHOLE,
    Change,
    config_generation,
    count_config_changes,
)

log = logging.getLogger(__name__)


PUBLISH_TRIES = 3
Published = Literal["stored", "held", "refused"]
"""What became of a whole publish (``Runtime.publish_now``)."""
"""Publishes of one change refused because another process stored a newer version first."""

WHOLE_ABOVE = SHARDS // 4
"""Keys changed in more shards than this (a batch of them) are published by a whole build."""

REDIS_TIMEOUT_S = 2.0
"""Socket timeout of the control plane's and the gateway's calls to Redis (the snapshot, the
quota endpoints' usage reads, the gateway's usage stream). A whole snapshot's size at 40,000
keys (12.7 MB in 65 parts) was stored in 0.12-0.28 s a call here, Redis's script 30-60 ms of it
(2026-12-07); the whole script call must be sent within it (docs/architecture.md)."""

WHOLE_EVERY_S = 2.0
"""A key change that follows changes not known to be in the store (another process's) is
published whole if this process stored no whole build for this long (``Runtime._follows``)."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    publisher: SnapshotPublisher
    server_secret: bytes
    memory_store: InMemorySnapshotStore | None = None
    _closers: list[object] = field(default_factory=list)
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
                    self._publish_changes(waiting)
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
        for change in changes:
            if change.keys is None:
                self.publish_now(counted=all(c.exact for c in changes))
                return
            keys |= change.keys
        shards = {key_shard(key_id) for key_id in keys}
        exact = {c.generation for c in changes if c.exact and c.generation is not None}
        if len(shards) > WHOLE_ABOVE or len(exact) < len(changes) or not self._may_patch(exact):
            self.publish_now(counted=len(exact) == len(changes))
            return
        self.publish_shards(shards, exact)

    def _may_patch(self, generations: set[int]) -> bool:
        """Every change committed before ``generations`` is known to be in the store, or this
        process stored a whole build less than ``whole_every_s`` ago.

        A change not known so is another process's (or one this process committed a moment
        ago, not waiting yet), perhaps a tenant or tier change still being published: its whole
        build, refused by each newer patch, would build again and again while this process
        kept patching over the core it has not, and never reach the gateways. A whole build
        here carries it. Another process's patches are never known so (``seen`` moves on this
        process's whole builds and checks), so with two control planes taking key changes
        every change would build whole; at most one a ``whole_every_s`` bounds how long such a
        change can be kept out at little cost."""
        if self._follows(generations) or self._store_follows(generations):
            return True
        return self._whole_at is not None and time.monotonic() - self._whole_at < self.whole_every_s

    def _store_follows(self, generations: set[int]) -> bool:
        """Whether the store's record says it holds every change committed before
        ``generations`` (``built_from``): with two control planes taking key changes, the other
        one's are known only so. Every version stored after the recorded one holds what it
        holds (a whole build reads after its version is handed out, which is after the record's
        state was read; a patch or a vouch keeps its base's other parts), so a patch of these
        changes' shards over whatever is stored by then leaves no change before them out."""
        recorded = self.publisher.built_from()
        if recorded is None:
            return False
        reached = carried_to(recorded.built_from.generation, generations)
        return reached >= max(generations)

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
        stored = self.publisher.published_version()
        if self.published_version is not None and (stored or 0) < self.published_version:
            # Older than what this process published or found stored: Redis restored from a
            # backup, or failed over to a lagging replica. A patch would serve its other
            # parts again (keys revoked since) under a newer version.
            log.warning("the snapshot store holds an older snapshot; publishing it whole")
            return self.publish_now(counted=counted) != "refused"
        for _ in range(PUBLISH_TRIES):
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
        the start publishes), or ``refused`` ``PUBLISH_TRIES`` times, other control planes
        storing newer versions each time; raises when the snapshot store fails. The caller
        holds ``publishing``, or publishes at start before anything else can."""
        for _ in range(PUBLISH_TRIES):
            now = utcnow()
            with self.session_factory() as session:
                state = config_state(session)  # before the build: it has at least this
            with self.metrics.building("whole") as build:
                version, stored = publish_snapshot(
                    self.session_factory,
                    self.publisher,
                    cache_secret=self.server_secret,
                    now=now,
                    built_from=state.as_built_from(),
                )
                build.version, build.outcome = version, "stored" if stored else "refused"
            if stored:  # not when another process stored a newer version meanwhile
                self.published_version, self.built_at = version, now
                self._whole_at = time.monotonic()
                self._saw(state)
                return "stored"
            if counted and self._stored_elsewhere(state):
                return "held"
        self._refused_every_time()
        return "refused"

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

    def _refused_every_time(self) -> None:
        """Say what a whole publish refused ``PUBLISH_TRIES`` times means: nothing alarming when
        the store holds what the database says all the same (another control plane stored a
        whole build read after this change committed, which has it); else that the change may
        not be at the gateways yet, and what publishes it. The caller holds ``publishing``."""
        with self.session_factory() as session:
            state = config_state(session)  # before the build: it has at least this
        current = current_digest(self.session_factory, cache_secret=self.server_secret)
        if self.publisher.published_digest() == current:  # read after it
            self._saw(state)
            self.published_version = self.publisher.published_version()
            log.info("other control planes stored newer snapshots, holding this configuration")
            return
        log.warning(
            "the gateways may not have the latest configuration yet: other control planes "
            "stored newer snapshots before each of this process's %d tries, and the snapshot "
            "store does not hold what the database says now; it is saved, and the control "
            "plane's check publishes it within seconds",
            PUBLISH_TRIES,
        )

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

    def close(self) -> None:
        self.engine.dispose()
        for closer in self._closers:
            close = getattr(closer, "close", None)
            if callable(close):
                close()


@dataclass(frozen=True)
class ConfigState:
    """What says whether the gateways' configuration may have changed: the count of committed
    changes, and when the price book version in force took effect (prices change at such
    instants without a commit)."""

    generation: int | None
    prices_since: datetime | None

    def as_built_from(self) -> BuiltFrom | None:
        """As the snapshot store records it beside a version built after it was read (None:
        nothing can be told from it)."""
        if self.generation is None:
            return None
        prices = "" if self.prices_since is None else self.prices_since.isoformat()
        return BuiltFrom(self.generation, prices)


def config_state(session: Session) -> ConfigState:
    return ConfigState(config_generation(session), prices_in_force_since(session, utcnow()))


def server_secret(settings: Settings) -> bytes:
    """The HMAC key for API keys and tokens.

    Production requires it in settings. Development persists a random one in the
    state directory so a restarted demo still accepts the keys it printed before.
    """
    configured = settings.security.key_hash_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    if settings.is_production:
        raise ConfigurationError("TRUNKLINE_SECURITY__KEY_HASH_SECRET is required in production")
    path = Path(settings.state_dir) / "key-hash-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode()


def build_runtime(settings: Settings) -> Runtime:
    settings.check_production()
    url = settings.database.url
    ensure_sqlite_dir(url)
    engine = make_engine(url, echo=settings.database.echo)
    closers: list[object] = []
    memory: InMemorySnapshotStore | None = None
    publisher: SnapshotPublisher
    if settings.redis.url:
        # Bounded: a Redis that stops answering fails a call in seconds, not redis-py's
        # default of 5 s a call (each write call waited for it, before ``outage``).
        client = redis.Redis.from_url(
            settings.redis.url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        closers.append(client)
        publisher = RedisSnapshotPublisher(client, settings.redis.key_prefix)
    else:
        memory = InMemorySnapshotStore()
        publisher = memory
    factory = make_sessionmaker(engine)
    count_config_changes(factory)
    return Runtime(
        settings=settings,
        engine=engine,
        session_factory=factory,
        publisher=publisher,
        server_secret=server_secret(settings),
        memory_store=memory,
        _closers=closers,
    )


def require_schema(runtime: Runtime) -> Runtime:
    """``runtime`` when its database is migrated to this code's schema; else it is closed and a
    one-line ConfigurationError says what to run."""
    try:
        require_current(runtime.settings.database.url, runtime.engine)
    except ConfigurationError:
        runtime.close()
        raise
    return runtime
