"""Shared wiring for every process: database, snapshot publisher, server secret."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.service import prices_in_force_since
from trunkline.errors import ConfigurationError
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.ids import utcnow
from trunkline.kit.migrate import ensure_sqlite_dir, require_current
from trunkline.settings import Settings
from trunkline.snapshot import InMemorySnapshotStore, RedisSnapshotPublisher, SnapshotPublisher
from trunkline.snapshot.builder import publish_snapshot
from trunkline.tenancy.changes import config_generation, count_config_changes

log = logging.getLogger(__name__)


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

    def publish(self) -> None:
        """Publish the current configuration to every gateway, after a change committed.

        A snapshot store that cannot take it (Redis away, read-only) neither fails nor undoes
        the change: a warning says so, and the control plane publishes it once the store
        answers again (``republish_if_stale``). Raising here would report a saved change as
        failed (an API caller retrying a key creation would get a second key).
        """
        try:
            with self.session_factory() as session:
                committed = config_generation(session)  # the caller's change, at least
            with self.publishing:
                # Changes committed in parallel (a bulk of API calls) wait for one build at a
                # time; one that a build started after its commit already carried is done.
                seen = self.seen.generation if self.seen is not None else None
                if seen is not None and committed is not None and seen >= committed:
                    return
                self.publish_now()
        except redis.RedisError as exc:
            log.warning(
                "the gateways' snapshot could not be published (%s); what the database holds is "
                "saved, and the control plane publishes it once the snapshot store answers",
                exc,
            )

    def publish_now(self) -> None:
        """Publish the current configuration; raises when the snapshot store fails. The caller
        holds ``publishing``, or publishes at start before anything else can."""
        with self.session_factory() as session:
            state = config_state(session)  # before the build: it has at least this
        self.published_version = publish_snapshot(
            self.session_factory, self.publisher, cache_secret=self.server_secret
        )
        self.seen = state

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
        client = redis.Redis.from_url(settings.redis.url)
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
