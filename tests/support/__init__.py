"""Test infrastructure shared by every test tier: throw-away servers and their helpers."""

from support.servers import (
    INSTALL_HINT,
    Database,
    PostgresServer,
    RedisServer,
    create_database,
    drop_database,
    free_port,
    start_postgres,
    start_redis,
    unique_database_name,
)

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
