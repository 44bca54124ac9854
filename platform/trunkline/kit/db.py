"""Database engines and sessions (the control plane and workers only; never the gateway)."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Dialect, Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5
"""libpq's ``connect_timeout`` unless the URL sets one: a PostgreSQL host that takes the
connection and never answers (frozen, or a proxy before a dead one) held ``/healthz`` and every
request for as long as the socket lived; now each fails as the database unavailable (503)."""

LIBPQ_DEFAULTS: dict[str, int] = {
    "connect_timeout": CONNECT_TIMEOUT_S,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq's connection parameters each PostgreSQL connection gets unless the URL sets them. A
host that vanishes without a reset (powered off, a partition, a failover that moved its
address) left a pooled connection waiting on its read for the kernel's defaults: keepalive
probes after 2 h idle, retransmissions for about 15 min. With these, a connection waiting for
an answer probes the host after 30 s of silence and gives up 10 s after an unanswered probe,
and one whose statement is not acknowledged gives up after 30 s (``tcp_user_timeout``, in ms,
which also ends the keepalive probing then): under a minute either way. A live server's kernel
answers the probes, so a long statement is not cut."""

IN_CHUNK = 5_000
"""Values per ``IN (…)`` list of a statement read in chunks on PostgreSQL: far below its
65,535 bind parameters per statement, few statements for thousands of values."""

_SQLITE_OTHER_PARAMETERS = 50
"""Bind parameters a chunked statement may have besides its list, kept free on SQLite."""


def chunked(session: Session, values: Iterable[T]) -> Iterator[list[T]]:
    """``values`` in lists small enough for an ``IN (…)`` each on ``session``'s database (one
    list of every value stops the statement at the database's bind-parameter cap once there
    are enough): ``IN_CHUNK`` on PostgreSQL; on SQLite under the connection's own cap, 999
    before SQLite 3.32 (Ubuntu 20.04, RHEL 8), where lists of 5,000 failed ("too many SQL
    variables")."""
    size = _in_chunk(session)
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _in_chunk(session: Session) -> int:
    if session.get_bind().dialect.name != "sqlite":
        return IN_CHUNK
    return max(1, min(IN_CHUNK, _sqlite_cap(session) - _SQLITE_OTHER_PARAMETERS))


def sqlite_rows_per_insert(session: Session, columns: int, most: int) -> int:
    """How many rows of ``columns`` values one multi-row ``INSERT`` may hold on ``session``'s
    SQLite, ``most`` at most: under the library's cap on bind parameters (999 before 3.32,
    where 1,000 rows of a few values each failed, "too many SQL variables")."""
    return max(1, min(most, (_sqlite_cap(session) - _SQLITE_OTHER_PARAMETERS) // columns))


def _sqlite_cap(session: Session) -> int:
    driver = session.connection().connection.dbapi_connection
    cap: int = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
    return cap


def conflict_insert(session: Session, entity: Any) -> Any:
    """``INSERT`` into ``entity`` for the session's database, with its dialect's
    ``on_conflict_do_nothing`` / ``on_conflict_do_update`` (PostgreSQL's or SQLite's)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(entity)


def driver_message(exc: DBAPIError) -> str:
    """The first line of what the database driver said (it names the host or the constraint,
    never the statement's parameters), or the error's type when it said nothing."""
    lines = str(exc.orig).splitlines() if exc.orig is not None else []
    return lines[0] if lines and lines[0].strip() else type(exc).__name__


UNIQUE_VIOLATION = "23505"
"""PostgreSQL's SQLSTATE for a unique constraint's refusal."""


SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
"""SQLite's names for a unique constraint's refusal: a primary key's has its own, where
PostgreSQL says 23505 for both."""


def unique_violation(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a unique constraint (a primary key's included) refusing a row, on
    PostgreSQL (SQLSTATE 23505) or SQLite: not a foreign key, check or not-null one."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return getattr(orig, "sqlite_errorname", None) in SQLITE_UNIQUE
    return getattr(orig, "sqlstate", None) == UNIQUE_VIOLATION


def _normalise(url: str) -> str:
    # Plain postgresql:// would pick psycopg2, which we do not ship.
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _json_loads(text: str | bytes) -> Any:
    """JSON columns read with msgspec (a big snapshot build reads one per API key; the
    standard library took a third of it), falling back to ``json`` for what msgspec refuses
    and ``json.dumps`` may have written (``NaN``)."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def make_engine(url: str, *, echo: bool = False, connections: int = 20) -> Engine:
    """An engine for ``url`` holding up to ``connections`` PostgreSQL connections (half of
    them kept open when idle)."""
    url = _normalise(url)
    # A failed statement's error is logged (unhandled errors, the configuration check, jobs):
    # its text held the statement's parameters, e-mail addresses and hashes of keys among them.
    # ``echo`` is asked for by whoever wants to see them. PostgreSQL's own text names a refused
    # row's values too (its DETAIL): the log formatters leave those out (``kit.logging``).
    kwargs: dict[str, Any] = {
        "echo": echo, "hide_parameters": not echo, "future": True, "json_deserializer": _json_loads,
    }  # fmt: skip
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kept = max(1, connections // 2)
        kwargs.update(pool_pre_ping=True, pool_size=kept, max_overflow=connections - kept)
        kwargs["connect_args"] = libpq_defaults(url)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", functools.partial(_sqlite_insert_cap, engine.dialect))
    return engine


def libpq_defaults(url: str) -> dict[str, int]:
    """The ``LIBPQ_DEFAULTS`` that ``url`` leaves unset, as the driver's connect arguments."""
    query = make_url(url).query
    return {name: value for name, value in LIBPQ_DEFAULTS.items() if name not in query}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_insert_cap(dialect: Dialect, dbapi_connection: Any, _record: Any) -> None:
    """Keep the rows inserted in one statement (SQLAlchemy's "insertmanyvalues", up to 32,700
    bind parameters) under the SQLite library's cap: 999 before 3.32."""
    cap = dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    dialect.insertmanyvalues_max_parameters = min(dialect.insertmanyvalues_max_parameters, cap)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def one_view(session: Session, *, read_only: bool = True) -> None:
    """Let every query of ``session``'s transaction see the database as its first query does,
    whatever commits beside it: a report read in many queries (an export of every tenant,
    group by group) while rollups and closes commit. Call it before the session's first query.

    PostgreSQL: ``REPEATABLE READ``, read only unless ``read_only`` is false (its default,
    ``READ COMMITTED``, gives each statement a view of its own). SQLite: an explicit ``BEGIN``
    (pysqlite runs reads outside a transaction), whose first read fixes what the transaction
    sees in WAL mode; ``BEGIN IMMEDIATE`` unless ``read_only``, taking the write lock at once
    (waiting the busy timeout for it), since a deferred one's first write fails at once
    (``SQLITE_BUSY_SNAPSHOT``) if another connection wrote since its first read. On SQLite the
    view also holds the WAL from being checkpointed until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": read_only}
        session.connection(execution_options=options)
    else:
        session.connection().exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
