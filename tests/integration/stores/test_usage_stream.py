"""One contract for the usage stream (in-memory and Redis), and idempotent ingest into the
ledger on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select

from support.servers import free_port, start_redis
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.migrate import upgrade
from trunkline.metering.ingest import ingest_once
from trunkline.metering.redis_stream import RedisUsageEmitter, RedisUsageReader
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stamps import entered_stream_at
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.models import UsageEvent

TENANT = str(uuid.uuid4())
PROJECT = str(uuid.uuid4())


def record(request_id: str, completion: int = 5) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant_id=TENANT,
        project_id=PROJECT,
        key_id="k" * 12,
        alias="llama",
        model="llama-served",
        endpoint_kind="chat",
        tier="gold",
        stream=False,
        status=200,
        prompt_tokens=10,
        cached_tokens=4,
        completion_tokens=completion,
        latency_ms=12.5,
        started_at=time.time(),
    )


class Stream:
    def __init__(self, emitter: Any, reader_factory: Any, held: Any) -> None:
        self.emitter = emitter
        self.reader_factory = reader_factory
        self.held = held
        """How many events the stream still holds."""

    async def emit_all(self, records: list[UsageRecord]) -> None:
        await self.emitter.start()
        for item in records:
            self.emitter.emit(item)
        await self.emitter.close()  # flushes what is queued


@pytest.fixture(params=["memory", "redis"])
def stream(request: pytest.FixtureRequest) -> Iterator[Stream]:
    if request.param == "memory":
        memory = InMemoryUsageStream()
        yield Stream(
            memory, lambda consumer, idle_ms=0: memory.reader(idle_ms / 1000), memory.__len__
        )
        return
    url = request.getfixturevalue("redis_url")
    sync = redis.Redis.from_url(url)
    emitter = RedisUsageEmitter(aioredis.Redis.from_url(url), "usage")

    def reader(consumer: str, idle_ms: int = 0) -> RedisUsageReader:
        return RedisUsageReader(sync, "usage", consumer=consumer, claim_idle_ms=idle_ms)

    yield Stream(emitter, reader, lambda: sync.xlen("usage"))
    sync.close()


async def test_every_event_is_read_once_and_acked(stream: Stream) -> None:
    await stream.emit_all([record(f"r{i}") for i in range(25)])
    reader = stream.reader_factory("c1", 60_000)
    first = reader.read(10)
    rest = reader.read(100)
    ids = [r.request_id for _m, r in first + rest]
    assert sorted(ids) == sorted(f"r{i}" for i in range(25))
    reader.ack([m for m, _r in first + rest])
    assert reader.read(100) == []


async def test_acked_events_leave_the_stream_and_the_rest_stay(stream: Stream) -> None:
    """The Redis stream kept every event ever ingested, about 670 bytes each, until Redis ran
    out of memory (and then refused the snapshot and the quota counters too)."""
    await stream.emit_all([record(f"r{i}") for i in range(10)])
    reader = stream.reader_factory("c1", 60_000)
    read = reader.read(6)
    reader.ack([m for m, _r in read[:4]])
    assert stream.held() == 6  # two read but not acked, four not read yet
    assert reader.backlog() == 6  # what the worker's metrics say is left to ingest
    reader.ack([m for m, _r in read[4:] + reader.read(100)])
    assert stream.held() == 0 and reader.backlog() == 0


async def test_a_batch_larger_than_lua_unpacks_at_once_is_acked_whole(stream: Stream) -> None:
    """``TRUNKLINE_JOBS__INGEST_BATCH`` may be set high: the ack takes the ids in pieces."""
    await stream.emit_all([record(f"r{i}") for i in range(9000)])
    reader = stream.reader_factory("c1", 60_000)
    reader.ack([m for m, _r in reader.read(9000)])
    assert stream.held() == 0


async def test_unacked_events_are_delivered_again(stream: Stream) -> None:
    """A consumer that dies before acking loses nothing: the next read gets the events."""
    await stream.emit_all([record("a"), record("b")])
    crashed = stream.reader_factory("crashed", 0)
    assert len(crashed.read(10)) == 2  # never acked
    survivor = stream.reader_factory("survivor", 0)
    again = survivor.read(10)
    assert sorted(r.request_id for _m, r in again) == ["a", "b"]


async def test_an_entry_says_when_it_entered_the_stream(stream: Stream) -> None:
    """After it was sent (to the millisecond, as a Redis entry id keeps it) and before the
    send returned: ingest judges an event stamped ahead against it, so none stamped at the
    present is, nor one sent late, however late."""
    sent_from = math.floor(time.time() * 1000) / 1000
    await stream.emit_all([record("a"), record("b")])
    sent_by = time.time()
    read = stream.reader_factory("c1").read(10)
    assert [r.request_id for _m, r in read] == ["a", "b"]
    for message_id, _record in read:
        entered = entered_stream_at(message_id)
        assert entered is not None and sent_from <= entered <= sent_by, (message_id, sent_by)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_ingest_is_idempotent_on_request_id(ledger: Any) -> None:
    memory = InMemoryUsageStream(claim_idle_s=0)
    for item in [record("x1"), record("x2"), record("x1", completion=99)]:
        memory.emit(item)
    assert ingest_once(memory, ledger) == 3
    memory.emit(record("x2"))  # redelivered by a retrying gateway
    ingest_once(memory, ledger)
    with ledger() as session:
        assert session.scalar(select(func.count()).select_from(UsageEvent)) == 2
        first = session.get(UsageEvent, "x1")
        assert first is not None and first.completion_tokens == 5 and first.cached_tokens == 4


def test_a_failed_write_leaves_events_in_the_stream(ledger: Any) -> None:
    memory = InMemoryUsageStream(claim_idle_s=0)
    memory.emit(record("y1"))
    broken = make_sessionmaker(make_engine("sqlite:///" + "/nonexistent/dir/x.db"))
    with pytest.raises(Exception):  # noqa: B017, PT011 - any database error
        ingest_once(memory, broken)
    assert len(memory) == 1
    assert ingest_once(memory, ledger) == 1
    assert len(memory) == 0


async def test_the_emitter_waits_out_a_redis_refusing_writes(
    redis_server: Any, redis_url: str
) -> None:
    """A failover can leave the gateway talking to a read-only replica for a while: the events
    wait in memory and are sent once Redis takes writes again (the emitter must not die)."""
    admin = redis_server.client()
    emitter = RedisUsageEmitter(aioredis.Redis.from_url(redis_url), "usage")
    try:
        admin.config_resetstat()
        admin.replicaof("127.0.0.1", str(free_port()))
        await emitter.start()
        emitter.emit(record("during-failover"))
        while "errorstat_READONLY" not in admin.info("errorstats"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # until the emitter met the replica
    finally:
        admin.replicaof("NO", "ONE")
    await emitter.close()
    assert admin.xlen("usage") == 1
    admin.close()


async def test_a_reader_made_before_redis_is_up_reads_once_it_is(tmp_path: Path) -> None:
    """``trunkline worker`` started before Redis: no crash; reads are an outage until Redis
    answers, and the first after it makes the consumer group."""
    server = start_redis(tmp_path)
    try:
        server.stop()
        client = redis.Redis.from_url(server.url)
        reader = RedisUsageReader(client, "usage", consumer="early")
        with pytest.raises(redis.ConnectionError):
            reader.read(10)
        server.start()
        emitter = RedisUsageEmitter(aioredis.Redis.from_url(server.url), "usage")
        await Stream(emitter, None, None).emit_all([record("after-redis-came")])
        [(message_id, read)] = reader.read(10)
        assert read.request_id == "after-redis-came"
        reader.ack([message_id])
        client.close()
    finally:
        server.destroy()


async def test_a_reader_removes_dead_consumers_but_never_one_holding_entries(
    redis_url: str,
) -> None:
    sync = redis.Redis.from_url(redis_url)
    name = f"usage-{uuid.uuid4().hex[:8]}"
    emitter = RedisUsageEmitter(aioredis.Redis.from_url(redis_url), name)
    await Stream(emitter, None, None).emit_all([record(f"f{i}") for i in range(3)])

    def reader(consumer: str, forget_idle_ms: int) -> RedisUsageReader:
        return RedisUsageReader(
            sync, name, consumer=consumer, forget_idle_ms=forget_idle_ms, forget_every_s=0
        )

    def others() -> dict[str, int]:
        """The group's consumers but "live" (whom a read that found nothing may not create)."""
        listed = sync.xinfo_consumers(name, "ingest")
        return {c["name"].decode(): c["pending"] for c in listed if c["name"] != b"live"}

    holder = reader("holder", 3_600_000)
    assert len(holder.read(2)) == 2  # a worker killed before it acked: 2 entries pending
    done = reader("done", 3_600_000)
    [(message_id, _)] = done.read(10)
    done.ack([message_id])  # a worker that stopped after acking all it read
    reader("live", 3_600_000).read(10)
    # None has been idle for an hour: every consumer stays.
    assert others() == {"holder": 2, "done": 0}

    reader("live", 0).read(10)  # every other consumer counts as idle long enough now

    # The one holding nothing is gone; the one holding entries stays, with its entries, for a
    # live reader to claim.
    assert others() == {"holder": 2}
    claimed = RedisUsageReader(sync, name, consumer="live", claim_idle_ms=0).read(10)
    assert sorted(r.request_id for _, r in claimed) == ["f0", "f1"]
    sync.close()


def test_a_reader_whose_stream_is_gone_makes_it_again_while_removing_dead_consumers(
    redis_url: str,
) -> None:
    """Redis restarted without its data, no usage emitted since: the stream key is gone, which
    ``XINFO CONSUMERS`` answers with "no such key", not NOGROUP. The read makes the group (and
    stream) again instead of failing on every call."""
    sync = redis.Redis.from_url(redis_url)
    reader = RedisUsageReader(sync, "usage", consumer="w", forget_every_s=0)
    assert reader.read(10) == []
    sync.flushall()
    assert reader.read(10) == []
    assert sync.xinfo_groups("usage")[0]["name"] == b"ingest"
    sync.close()
