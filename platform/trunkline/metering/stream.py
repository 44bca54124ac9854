"""The usage stream between gateways and the ingest consumer: its two sides' protocols, and
the in-memory stream of the embedded mode (the Redis one is in ``metering.redis_stream``).

The gateway side (``UsageEmitter``) never blocks a response: ``emit`` only
queues. The consumer side reads and acks only after the ledger committed, so a
crashed consumer's messages stay pending and are claimed again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from trunkline.metering.schemas import UsageRecord

log = logging.getLogger(__name__)


class UsageEmitter(Protocol):
    held: int
    """Events emitted and not yet in the stream (held in this process's memory)."""

    def emit(self, record: UsageRecord) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class UsageReader(Protocol):
    dead_lettered: int
    """Entries this reader set aside in the dead-letter stream: events not billed."""

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        """Up to ``max_count`` (id, event); when each entered: ``stamps.entered_stream_at``."""
        ...

    def ack(self, ids: list[str]) -> None: ...
    def set_aside(self, entries: list[tuple[str, UsageRecord, str]]) -> None:
        """Done with these (id, event, why) entries without billing them: kept in the
        dead-letter stream with the reason, and removed from the stream."""
        ...

    def backlog(self) -> int:
        """Events in the stream not in the ledger yet: waiting, or read and not acked."""
        ...


class InMemoryUsageStream:
    """Both ends in one process, with the consumer-group semantics of the Redis stream:
    a read message stays pending until acked, and is handed out again only after it
    sat unacked for ``claim_idle_s`` (its reader is presumed dead). An entry's id says when it
    was emitted, ``<ms>-<seq>`` as Redis's, by ``clock``: the process's, its gateway's too."""

    def __init__(
        self, claim_idle_s: float = 30.0, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, UsageRecord]] = deque()
        self._pending: dict[str, tuple[float, UsageRecord]] = {}
        self._seq = 0
        self.claim_idle_s = claim_idle_s
        self.held = 0
        """Always 0: an event is in the stream as soon as it is emitted."""
        self.dead_lettered = 0
        """Events set aside (``set_aside``; its events are never encoded, so never fail to
        decode)."""
        self.dead: list[tuple[UsageRecord, str]] = []
        """The events set aside and why: the dead-letter stream of the embedded mode."""

    def emit(self, record: UsageRecord) -> None:
        with self._lock:
            self._seq += 1
            self._queue.append((f"{int(self._clock() * 1000)}-{self._seq}", record))

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

    def set_aside(self, entries: list[tuple[str, UsageRecord, str]]) -> None:
        for _id, record, reason in entries:
            log_set_aside(record, reason)
        with self._lock:
            self.dead.extend((record, reason) for _id, record, reason in entries)
            self.dead_lettered += len(entries)
        self.ack([message_id for message_id, _record, _reason in entries])

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._pending)

    def backlog(self) -> int:
        return len(self)


class _InMemoryReader:
    def __init__(self, stream: InMemoryUsageStream, claim_idle_s: float) -> None:
        self._stream = stream
        self._claim_idle_s = claim_idle_s
        self.dead_lettered = 0

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        return self._stream.read_claiming(max_count, self._claim_idle_s)

    def ack(self, ids: list[str]) -> None:
        self._stream.ack(ids)

    def set_aside(self, entries: list[tuple[str, UsageRecord, str]]) -> None:
        self._stream.set_aside(entries)
        self.dead_lettered += len(entries)

    def backlog(self) -> int:
        return len(self._stream)


def log_set_aside(record: UsageRecord, reason: str) -> None:
    """The error line of an event set aside: which request and whose (ids, no secret)."""
    log.error(
        "usage event set aside in the dead-letter stream, not billed: %s",
        reason,
        extra={
            "request_id": record.request_id,
            "tenant_id": record.tenant_id,
            "key_id": record.key_id,
        },
    )
