"""Alembic environment: runs on SQLite and PostgreSQL from the URL it is given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from trunkline.kit.db import make_engine
from trunkline.models import Base

config = context.config
MIGRATION_LOCK = 0x7472756E6B6C696E  # "trunklin": the advisory lock migrations hold
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # A batch migration recreates a table on SQLite (copy, drop, rename): with foreign
            # keys enforced, dropping the old table deleted by cascade every row referring to
            # it (0004 emptied projects, API keys, memberships and entitlements). Set outside
            # a transaction, where SQLite takes it; the connection is discarded after.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        if conn.dialect.name == "postgresql":
            # One migration at a time (an init container per replica): the next waits, then
            # finds the schema migrated, where it created the same tables at once and stopped
            # on a duplicate key. Held until the connection closes.
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            conn.commit()
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
