"""The gateway's emitter: batches go out as one round trip each, one stream entry per event,
and closing it sends everything still queued (or says how many it could not)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from integration.metering.pipeline_support import STREAM
from support.servers import start_redis
from trunkline.metering.redis_stream import RedisUsageEmitter
from trunkline.metering.schemas import decode_usage
from unit.metering.usage_support import Account, at, event

ACME = Account(
    "00000000-0000-0000-0000-00000000000a",
    "00000000-0000-0000-0000-0000000000a1",
    "gold",
    "acmekey00000",
)


async def test_close_sends_every_queued_event_one_entry_each(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    emitter = RedisUsageEmitter(client, STREAM, max_batch=100)
    await emitter.start()
    events = [event(ACME, f"e{n}", when=at(3)) for n in range(2500)]
    for index, item in enumerate(events):
        emitter.emit(item)
        if index == 99:
            await asyncio.sleep(0)  # the flusher takes a batch and is sending it...
    await emitter.close()  # ...when the gateway shuts down
    await client.aclose()
    with redis.Redis.from_url(redis_url) as sync:
        entries = sync.xrange(STREAM)
    assert [decode_usage(fields[b"e"]).request_id for _id, fields in entries] == [
        e.request_id for e in events
    ]


async def test_closing_while_redis_is_away_counts_every_event_it_loses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path)
    client = aioredis.Redis.from_url(server.url)
    emitter = RedisUsageEmitter(client, STREAM)
    await emitter.start()
    server.stop()
    try:
        for n in range(3):
            emitter.emit(event(ACME, f"in-flight-{n}", when=at(3)))
        await asyncio.sleep(0.1)  # the flusher took the three and is retrying them
        for n in range(5):
            emitter.emit(event(ACME, f"queued-{n}", when=at(3)))
        with caplog.at_level(logging.ERROR, logger="trunkline.metering.redis_stream"):
            await emitter.close(timeout_s=0.3)
    finally:
        await client.aclose()
        server.destroy()
    [lost] = [r for r in caplog.records if "lost at shutdown" in r.getMessage()]
    assert lost.events == 8, "the batch being sent is lost too"  # type: ignore[attr-defined]


async def test_events_refused_by_redis_for_a_while_are_sent_once_it_takes_them(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis refusing the emitter's writes for a reason that is not an outage (its user's
    permissions taken away by an ACL change, then given back) must not end the emitter: it
    kept every later event in memory for good, and its close raised the refusal."""
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", "gateway", "on", "nopass", "~*", "+@all")
    gateway = aioredis.Redis.from_url(redis_url, username="gateway", password="")
    emitter = RedisUsageEmitter(gateway, STREAM, max_batch=10)
    await emitter.start()
    events = [event(ACME, f"acl-{n}", when=at(3)) for n in range(30)]
    try:
        admin.execute_command("ACL", "SETUSER", "gateway", "-@all")
        with caplog.at_level(logging.ERROR, logger="trunkline.metering.redis_stream"):
            for item in events[:20]:
                emitter.emit(item)
            for _ in range(500):  # until the refusal is met (10 s at most)
                if caplog.records:
                    break
                await asyncio.sleep(0.02)
        admin.execute_command("ACL", "SETUSER", "gateway", "+@all")
        for item in events[20:]:
            emitter.emit(item)
        await emitter.close(timeout_s=10)
        entries = admin.xrange(STREAM)
    finally:
        await gateway.aclose()
        admin.execute_command("ACL", "DELUSER", "gateway")
        admin.close()
    assert "refused" in caplog.records[0].getMessage()
    assert sorted(decode_usage(fields[b"e"]).request_id for _id, fields in entries) == sorted(
        e.request_id for e in events
    )
