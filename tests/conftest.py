"""Session-wide fixtures: real PostgreSQL and Redis servers, started only when a test asks.

No application imports here: application fixtures live in the conftest files of the test tiers.
Servers are session-scoped; each test gets a fresh database and an empty Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.servers import (
    Database,
    PostgresServer,
    RedisServer,
    create_database,
    drop_database,
    start_postgres,
    start_redis,
    unique_database_name,
)

SERVER_FIXTURES = frozenset({"postgres_server", "redis_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real server, so `-m "not integration"` gives a fast run."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_database(
    postgres_server: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[Database]:
    """A fresh, empty database for this test, dropped afterwards (open connections are cut)."""
    name = unique_database_name(request.node.name)
    url = create_database(postgres_server, name)
    yield Database(name=name, url=url, dsn=postgres_server.dsn_for(name))
    drop_database(postgres_server, name)


@pytest.fixture
def postgres_url(postgres_database: Database) -> str:
    """SQLAlchemy URL (``postgresql+psycopg://``) of a fresh, empty database for this test."""
    return postgres_database.url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis (db 0), emptied with FLUSHALL before this test."""
    redis_server.flushall()
    return redis_server.url
