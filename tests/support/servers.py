"""Real, throw-away PostgreSQL and Redis servers for integration tests.

The servers themselves are :mod:`trunkline.bench.servers` (benchmarks use them too); this module
adds what tests want on top: a non-durable cluster in RAM when possible, per-test databases
(optionally cloned from a template) and the names the fixtures use. Each server listens on
127.0.0.1 on a free port, keeps its files in a temporary directory and is gone after
``stop()``. A missing binary raises an error naming what to install: tests that need a server
fail loudly, they never skip.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from trunkline.bench import servers
from trunkline.bench.processes import LOOPBACK, free_loopback_ports
from trunkline.bench.servers import INSTALL_HINT, PostgresCluster
from trunkline.bench.servers import RedisInstance as RedisServer

__all__ = [
    "INSTALL_HINT",
    "Database",
    "PostgresServer",
    "RedisServer",
    "create_database",
    "drop_database",
    "free_port",
    "start_postgres",
    "start_redis",
    "unique_database_name",
]

RAM_DIR = Path("/dev/shm")


def free_port() -> int:
    """A TCP port free on loopback right now (callers retry if another process takes it)."""
    return free_loopback_ports(1)[0]


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    """A running throw-away cluster; superuser ``postgres`` with trust auth."""

    cluster: PostgresCluster
    host: str = LOOPBACK
    user: str = "postgres"

    @property
    def port(self) -> int:
        return self.cluster.port

    @property
    def log_file(self) -> Path:
        return self.cluster.log_file

    @property
    def url(self) -> str:
        """SQLAlchemy URL (sync and async engines) of the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return self.cluster.url(dbname)

    def dsn_for(self, dbname: str) -> str:
        """libpq connection string, for ``psycopg.connect`` and command-line tools."""
        return self.cluster.dsn(dbname)

    def stop(self) -> None:
        """Stop at once (no checkpoint: nothing here is worth keeping) and delete the cluster."""
        self.cluster.destroy()


def _postgres_parent(tmpdir: Path) -> Path | None:
    """Where the cluster's private dir goes (``None``: the system temp dir).

    RAM (/dev/shm) when available: CREATE DATABASE per test drops from 100-250 ms on disk to
    10-30 ms. Otherwise ``tmpdir``, unless we are root (the ``postgres`` user cannot enter pytest's
    0700 temp dirs) or its path is too long for a unix socket (108 bytes).
    """
    if os.access(RAM_DIR, os.W_OK | os.X_OK):
        return RAM_DIR
    if os.geteuid() != 0 and len(str(tmpdir)) <= 60:
        return tmpdir
    return None


def start_postgres(tmpdir: Path) -> PostgresServer:
    """initdb a fresh, non-durable cluster and start it on a free loopback port."""
    return PostgresServer(servers.start_postgres(_postgres_parent(Path(tmpdir)), durable=False))


@dataclass(frozen=True)
class Database:
    """A database made for one test: SQLAlchemy ``url`` and libpq ``dsn`` (for psycopg)."""

    name: str
    url: str
    dsn: str


def unique_database_name(hint: str) -> str:
    """A valid, unique database name (≤ 63 bytes) derived from ``hint``, e.g. a test name."""
    stem = re.sub(r"[^a-z0-9]+", "_", hint.lower()).strip("_")[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:12]}"


def create_database(server: PostgresServer, name: str, *, template: str | None = None) -> str:
    """CREATE DATABASE ``name`` (empty, or a copy of ``template``); returns its SQLAlchemy URL."""
    return server.cluster.create_database(name, template=template)


def drop_database(server: PostgresServer, name: str) -> None:
    """DROP DATABASE, terminating connections a test left open."""
    server.cluster.drop_database(name)


# --- Redis ------------------------------------------------------------------------------------


def start_redis(tmpdir: Path, appendonly: bool = False) -> RedisServer:
    """Start redis-server on a free loopback port with its files in a new dir under ``tmpdir``."""
    return servers.start_redis(Path(tmpdir), appendonly=appendonly)
