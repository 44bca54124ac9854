"""Guards the test infrastructure itself: the server fixtures give real, isolated servers."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from support.servers import Database, PostgresServer, RedisServer, start_redis

pytestmark = pytest.mark.integration


def test_postgres_database_accepts_queries(postgres_database: Database, postgres_url: str) -> None:
    assert postgres_url == postgres_database.url
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    with psycopg.connect(postgres_database.dsn) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO t VALUES (1, 'one')")
        row = conn.execute("SELECT name, current_database(), version() FROM t").fetchone()
    assert row is not None
    name, database, version = row
    assert name == "one"
    assert database == postgres_database.name
    assert postgres_url.endswith(f"/{database}")
    assert version.startswith("PostgreSQL ")


def test_each_test_gets_an_empty_database(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)
    assert postgres_server.url.endswith("/postgres")


def test_postgres_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn_for("postgres")) as conn:
        row = conn.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)


def test_redis_set_get(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"


def test_redis_is_flushed_between_tests(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


@pytest.mark.parametrize(("appendonly", "survives"), [(True, True), (False, False)])
def test_redis_restart_keeps_only_appendonly_data(
    tmp_path: Path, appendonly: bool, survives: bool
) -> None:
    server: RedisServer = start_redis(tmp_path, appendonly=appendonly)
    try:
        with server.client() as client:
            client.set("key", "value")
        pid_before = server.pid
        server.restart()
        assert server.pid != pid_before
        with server.client() as client:
            assert (client.get("key") == b"value") is survives
    finally:
        server.stop()


def test_redis_stop_makes_it_unreachable_until_started(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        server.stop()
        with server.client() as client, pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        with server.client() as client:
            assert client.ping()
    finally:
        server.stop()
