"""The usage stream between gateways and the ingest consumer.

The gateway side (``UsageEmitter``) never blocks a response: ``emit`` only
queues. The Redis emitter flushes the queue in batches with XADD from a
background task; the consumer side reads through a consumer group and acks
only after the ledger committed, so a crashed consumer's messages stay
pending and are claimed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis

from trunkline.metering.schemas import UsageRecord, decode_usage, encode_usage

log = logging.getLogger(__name__)


class UsageEmitter(Protocol):
    def emit(self, record: UsageRecord) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class UsageReader(Protocol):
    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]: ...
    def ack(self, ids: list[str]) -> None: ...


class InMemoryUsageStream:
    """Both ends in one process, with the consumer-group semantics of the Redis stream:
    a read message stays pending until acked, and is handed out again only after it
    sat unacked for ``claim_idle_s`` (its reader is presumed dead)."""

    def __init__(self, claim_idle_s: float = 30.0) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, UsageRecord]] = deque()
        self._pending: dict[str, tuple[float, UsageRecord]] = {}
        self._seq = 0
        self.claim_idle_s = claim_idle_s

    def emit(self, record: UsageRecord) -> None:
        with self._lock:
            self._seq += 1
            self._queue.append((str(self._seq), record))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def reader(self, claim_idle_s: float) -> UsageReader:
        """Another consumer of the same stream, with its own claim timeout."""
        return _InMemoryReader(self, claim_idle_s)

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        return self.read_claiming(max_count, self.claim_idle_s)

    def read_claiming(self, max_count: int, claim_idle_s: float) -> list[tuple[str, UsageRecord]]:
        now = time.monotonic()
        with self._lock:
            batch = [
                (message_id, record)
                for message_id, (since, record) in self._pending.items()
                if now - since >= claim_idle_s
            ][:max_count]
            while self._queue and len(batch) < max_count:
                batch.append(self._queue.popleft())
            for message_id, record in batch:
                self._pending[message_id] = (now, record)
            return batch

    def ack(self, ids: list[str]) -> None:
        with self._lock:
            for message_id in ids:
                self._pending.pop(message_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._pending)


class _InMemoryReader:
    def __init__(self, stream: InMemoryUsageStream, claim_idle_s: float) -> None:
        self._stream = stream
        self._claim_idle_s = claim_idle_s

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        return self._stream.read_claiming(max_count, self._claim_idle_s)

    def ack(self, ids: list[str]) -> None:
        self._stream.ack(ids)


class RedisUsageEmitter:
    def __init__(
        self, client: aioredis.Redis, stream: str, *, max_batch: int = 500, maxlen: int = 10_000_000
    ) -> None:
        self._client = client
        self._stream = stream
        self._max_batch = max_batch
        self._maxlen = maxlen
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def emit(self, record: UsageRecord) -> None:
        self._queue.put_nowait(record)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-emitter")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_remaining()

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._send_with_retry(batch)

    async def _send_with_retry(self, batch: list[UsageRecord]) -> None:
        delay = 0.05
        while True:
            try:
                await self._send(batch)
                return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                # Keep the events in memory while Redis is away; never drop them.
                log.warning("usage stream unavailable, retrying", extra={"events": len(batch)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _send(self, batch: list[UsageRecord]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for record in batch:
                pipe.xadd(
                    self._stream,
                    {"id": record.request_id, "e": encode_usage(record)},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()

    async def _flush_remaining(self) -> None:
        batch: list[UsageRecord] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            try:
                await self._send(batch)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                log.error("usage events lost at shutdown", extra={"events": len(batch)})


class RedisUsageReader:
    """Consumer-group reader; claims messages idle longer than ``claim_idle_ms``."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        group: str = "ingest",
        consumer: str = "ingest-1",
        claim_idle_ms: int = 30_000,
    ) -> None:
        self._client = client
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        claimed: Any = self._client.xautoclaim(
            self._stream, self._group, self._consumer, self._claim_idle_ms, "0-0", count=max_count
        )
        messages = list(claimed[1])
        if len(messages) < max_count:
            fresh: Any = self._client.xreadgroup(
                self._group, self._consumer, {self._stream: ">"}, count=max_count - len(messages)
            )
            for _stream, items in fresh or []:
                messages.extend(items)
        out = []
        for message_id, fields in messages:
            if fields is None:  # deleted while pending
                continue
            out.append((_text(message_id), decode_usage(fields[b"e"])))
        return out

    def ack(self, ids: list[str]) -> None:
        if ids:
            self._client.xack(self._stream, self._group, *ids)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
