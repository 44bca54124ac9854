"""The gateway's emitter: batches go out as one round trip each, one stream entry per event,
and closing it sends everything still queued."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis

from integration.metering.pipeline_support import STREAM
from trunkline.metering.schemas import decode_usage
from trunkline.metering.stream import RedisUsageEmitter
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
