"""Shared wiring for every process: database, snapshot publisher, server secret."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import Engine

from trunkline.apps.change_publisher import ChangePublisher
from trunkline.errors import ConfigurationError
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.migrate import ensure_sqlite_dir, require_current
from trunkline.settings import Settings
from trunkline.snapshot import InMemorySnapshotStore, RedisSnapshotPublisher, SnapshotPublisher
from trunkline.tenancy.changes import count_config_changes

REDIS_TIMEOUT_S = 2.0
"""Socket timeout of the control plane's and the gateway's calls to Redis (the snapshot, the
quota endpoints' usage reads, the gateway's usage stream). A whole snapshot's size at 40,000
keys (12.7 MB in 65 parts) was stored in 0.12-0.28 s a call here, Redis's script 30-60 ms of it
(2026-12-07); the whole script call must be sent within it (docs/architecture.md)."""


@dataclass(kw_only=True)
class Runtime(ChangePublisher):
    """A process's database, snapshot store and secret, and what publishes its changes."""

    settings: Settings
    engine: Engine
    memory_store: InMemorySnapshotStore | None = None
    previous_secrets: tuple[bytes, ...] = ()
    """Server secrets still accepted to verify what was issued under them (see above)."""
    _closers: list[object] = field(default_factory=list)

    def close(self) -> None:
        self.engine.dispose()
        for closer in self._closers:
            close = getattr(closer, "close", None)
            if callable(close):
                close()


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


def previous_secrets(settings: Settings) -> tuple[bytes, ...]:
    """The server secrets still accepted to verify keys and tokens issued before the operator
    rotated it (``TRUNKLINE_SECURITY__PREVIOUS_KEY_HASH_SECRETS``); never used to issue."""
    return tuple(
        old.get_secret_value().encode() for old in settings.security.previous_key_hash_secrets
    )


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
        previous_secrets=previous_secrets(settings),
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
