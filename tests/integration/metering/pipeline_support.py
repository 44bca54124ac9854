"""Helpers of the pipeline fault tests: emit through the gateway's emitter, consume in a
thread, poll with deadlines, and reconcile the ledger against what was emitted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.redis_stream import RedisUsageEmitter, RedisUsageReader
from trunkline.metering.schemas import UsageRecord
from trunkline.models import UsageEvent, UsageRollup

STREAM = "trunkline:usage"


def emit(
    url: str, events: list[UsageRecord], *, between: Callable[[int], None] | None = None
) -> None:
    """Emit through :class:`RedisUsageEmitter`; ``between(n)`` runs (in a thread) after the
    n-th hundred, while the emitter keeps going."""

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        emitter = RedisUsageEmitter(client, STREAM, max_batch=100)
        await emitter.start()
        for index, item in enumerate(events):
            emitter.emit(item)
            if index % 100 == 99:
                await asyncio.sleep(0.005)
                if between is not None:
                    await asyncio.to_thread(between, index // 100)
        await emitter.close(timeout_s=60)
        await client.aclose()

    asyncio.run(run())


def reader(url: str, consumer: str, claim_idle_ms: int = 30_000) -> RedisUsageReader:
    client = redis.Redis.from_url(url, socket_timeout=5)
    return RedisUsageReader(client, STREAM, consumer=consumer, claim_idle_ms=claim_idle_ms)


class ConsumerThread:
    """A real consumer running in a thread until ``stop()``."""

    def __init__(self, url: str, factory: sessionmaker[Session], **options: Any) -> None:
        self.consumer = UsageConsumer(reader(url, "thread"), factory, **options)
        self._thread = threading.Thread(target=self.consumer.run, args=(0.05,), daemon=True)

    def __enter__(self) -> UsageConsumer:
        self._thread.start()
        return self.consumer

    def __exit__(self, *_exc: object) -> None:
        self.consumer.stop.set()
        self._thread.join(30)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ledger_ids(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(session.scalars(select(UsageEvent.request_id)))


def ledger_count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(UsageEvent)) or 0)


def assert_reconciled(factory: sessionmaker[Session], emitted: list[UsageRecord]) -> None:
    """Zero lost, zero doubled: the ledger holds exactly the emitted request ids, and its
    rollups exactly their tokens."""
    from trunkline.metering.rollups import rollup_usage

    ids = ledger_ids(factory)
    assert len(ids) == len(set(ids))
    expected = {e.request_id for e in emitted}
    assert set(ids) == expected, (len(expected - set(ids)), "lost", len(set(ids) - expected))
    rollup_usage(factory)
    with factory() as session:
        requests, prompt, completion = session.execute(
            select(
                func.sum(UsageRollup.requests),
                func.sum(UsageRollup.prompt_tokens),
                func.sum(UsageRollup.completion_tokens),
            )
        ).one()
    unique = {e.request_id: e for e in emitted}.values()
    assert requests == len(unique)
    assert prompt == sum(e.prompt_tokens for e in unique)
    assert completion == sum(e.completion_tokens for e in unique)
