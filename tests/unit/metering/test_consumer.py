"""The consumer acks a batch only after the ledger committed it: a database that is away
leaves events waiting, and a consumer stopped mid-retry leaves its batch to be claimed."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.models import UsageEvent
from unit.metering.usage_support import Account, at, event


class FlakyDatabase:
    """A session factory whose first ``failures`` sessions cannot reach the database."""

    def __init__(self, factory: sessionmaker[Session], failures: int) -> None:
        self.factory = factory
        self.failures = failures

    def __call__(self) -> Session:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("connect", {}, ConnectionRefusedError("database is down"))
        return self.factory()


def ledger_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(UsageEvent)) or 0)


def test_events_wait_while_the_database_is_away_then_land(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    stream = InMemoryUsageStream(claim_idle_s=3600)
    for n in range(10):
        stream.emit(event(tenants["acme"], f"r{n}", when=at(3)))
    flaky: Any = FlakyDatabase(factory, failures=3)
    consumer = UsageConsumer(stream, flaky, batch_size=4, retry_initial_s=0.001)
    assert consumer.drain() == 10
    assert consumer.stats.write_retries == 3
    assert ledger_count(factory) == 10
    assert len(stream) == 0  # all acked


def test_a_consumer_stopped_while_retrying_leaves_its_batch_pending(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    stream = InMemoryUsageStream(claim_idle_s=0)
    for n in range(3):
        stream.emit(event(tenants["acme"], f"r{n}", when=at(3)))
    stop = threading.Event()
    down: Any = FlakyDatabase(factory, failures=1)
    original = down.__call__

    def down_then_stop() -> Session:
        stop.set()  # the process is told to stop while the database is away
        return original()  # type: ignore[no-any-return]

    dying = UsageConsumer(stream, down_then_stop, stop=stop, retry_initial_s=0.001)  # type: ignore[arg-type]
    assert dying.step() == 0
    assert len(stream) == 3  # nothing acked
    survivor = UsageConsumer(stream.reader(claim_idle_s=0), factory)
    assert survivor.drain() == 3
    assert ledger_count(factory) == 3


class FlakyStream:
    """A stream whose first ``failures`` reads raise ``error`` (Redis away, by default)."""

    def __init__(
        self, stream: InMemoryUsageStream, failures: int, error: Exception | None = None
    ) -> None:
        self.stream = stream
        self.failures = failures
        self.error = error or redis.ConnectionError("Redis is away")

    def read(self, max_count: int) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise self.error
        return self.stream.read(max_count)

    def ack(self, ids: list[str]) -> None:
        self.stream.ack(ids)


def test_a_stream_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    factory: sessionmaker[Session], tenants: dict[str, Account], caplog: Any
) -> None:
    """Twice a second for the whole outage, and never that it ended."""
    stream = InMemoryUsageStream(claim_idle_s=3600)
    stream.emit(event(tenants["acme"], "r1", when=at(3)))
    reader: Any = FlakyStream(stream, failures=4)
    consumer = UsageConsumer(reader, factory, retry_initial_s=0.0)
    caplog.set_level("INFO", logger="trunkline.metering.consumer")
    moved = sum(consumer.step() for _ in range(6))
    messages = [r.getMessage() for r in caplog.records if r.name == "trunkline.metering.consumer"]
    assert messages == ["usage stream unavailable, waiting", "usage stream available again"]
    assert moved == 1 and ledger_count(factory) == 1


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's failing"),
        redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
    ],
    ids=["readonly", "misconf", "oom"],
)
def test_a_redis_that_refuses_writes_is_waited_for_like_one_that_is_away(
    factory: sessionmaker[Session], tenants: dict[str, Account], error: Exception
) -> None:
    """A failover leaves the worker talking to a demoted replica: waiting, not crashing every
    worker at once (XAUTOCLAIM is a write)."""
    stream = InMemoryUsageStream(claim_idle_s=3600)
    stream.emit(event(tenants["acme"], "r1", when=at(3)))
    consumer = UsageConsumer(FlakyStream(stream, 2, error), factory, retry_initial_s=0.0)
    assert sum(consumer.step() for _ in range(3)) == 1 and ledger_count(factory) == 1


def test_a_redis_that_refuses_the_worker_s_credentials_stops_it(
    factory: sessionmaker[Session],
) -> None:
    """Waiting would leave it running, ingesting nothing, until someone reads its log."""
    stream = InMemoryUsageStream(claim_idle_s=3600)
    refused = redis.AuthenticationError("invalid username-password pair or user is disabled.")
    consumer = UsageConsumer(FlakyStream(stream, 1, refused), factory, retry_initial_s=0.0)
    with pytest.raises(redis.AuthenticationError):
        consumer.step()
