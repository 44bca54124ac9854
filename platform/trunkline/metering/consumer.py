"""The usage consumer: read a batch from the stream, write it to the ledger, ack it.

A batch is acked only after its transaction committed. While PostgreSQL is unavailable the
consumer keeps the batch and retries it with backoff, and new events wait in the stream; while
Redis is unavailable it waits too. A consumer killed at any point leaves its batch pending in
the group, where another consumer claims it (``XAUTOCLAIM``); a batch that was committed but
not acked is written again harmlessly (``ON CONFLICT DO NOTHING``). An event stamped by a
wrong clock (``stamps.misdated``, judged against when it entered the stream) is set aside in
the dead-letter stream, not written, unless the ledger holds it already (written by a worker
that took it, then claimed): billed, it is acked as a redelivery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.pricebook_store import prices_start
from trunkline.kit.db import chunked
from trunkline.kit.redis_errors import redis_unavailable
from trunkline.metering.ingest import write_usage
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stamps import (
    ENTERED_STREAM,
    MAX_AHEAD_S,
    WORKER_CLOCK,
    entered_stream_at,
    misdated,
)
from trunkline.metering.stream import UsageReader
from trunkline.models import UsageEvent

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    batches: int = 0
    events: int = 0
    """Events written to the ledger and acked (redeliveries included; not those set aside)."""
    inserted: int = 0
    """Events that were new to the ledger (``events - inserted`` were redeliveries)."""
    write_retries: int = 0
    last_read_at: float | None = None
    """When (Unix seconds) the stream last answered a read, a batch or nothing."""
    last_commit_at: float | None = None
    """When the ledger last committed a batch."""


class UsageConsumer:
    def __init__(
        self,
        reader: UsageReader,
        factory: sessionmaker[Session],
        *,
        batch_size: int = 5000,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.time,
        max_ahead_s: float = MAX_AHEAD_S,
    ) -> None:
        """An event stamped more than ``max_ahead_s`` after it entered the stream (the stream's
        clock: ``stamps.entered_stream_at``) is set aside, as is one stamped before the first
        price book version. ``clock`` (Unix seconds, the worker's) stands for the time it
        entered where the stream's entry id does not say."""
        self._reader = reader
        self._factory = factory
        self._batch_size = batch_size
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._clock = clock
        self._max_ahead_s = max_ahead_s
        self.stop = stop or threading.Event()
        self.stats = ConsumerStats()
        self._holding: set[str] = set()
        self._lock = threading.Lock()
        self._stream_down = False
        """Reads failed since the last that worked: one line when it starts, one when it ends."""

    def step(self) -> int:
        """Move one batch; returns how many events it held (0: the stream is empty)."""
        return self._commit(self._read())

    def drain(self, max_seconds: float | None = None) -> int:
        """Move batches until the stream is empty, time is up or ``stop`` is set."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        return self._loop(lambda: deadline is not None and time.monotonic() >= deadline, None)

    def run(self, idle_sleep_s: float = 0.2) -> None:
        """Consume until ``stop`` is set."""
        self._loop(lambda: False, idle_sleep_s)

    def _loop(self, time_is_up: Callable[[], bool], idle_sleep_s: float | None) -> int:
        """Write each batch while the next one is read (the reads run in a second thread, so
        Redis and PostgreSQL work at the same time). ``idle_sleep_s`` None: return once the
        stream is empty. Once time is up nothing more is read, and what was read is written:
        a batch read ahead and left, which the run did not count, stayed pending until
        claimed, and an embedded shutdown drain, seeing a run move nothing, lost it with the
        in-memory stream. Stopped, a batch read and not written stays pending and is claimed
        like any other."""
        moved = 0
        with ThreadPoolExecutor(1, thread_name_prefix="usage-read") as reads:
            upcoming: Future[list[tuple[str, UsageRecord]]] | None = reads.submit(self._read)
            while upcoming is not None and not self.stop.is_set():
                batch = upcoming.result()
                upcoming = None
                if batch:
                    if not time_is_up():
                        upcoming = reads.submit(self._read)
                    moved += self._commit(batch)
                elif idle_sleep_s is not None and not self.stop.wait(idle_sleep_s):
                    upcoming = reads.submit(self._read)
            if upcoming is not None:
                upcoming.cancel()
        return moved

    def _read(self) -> list[tuple[str, UsageRecord]]:
        try:
            batch = self._reader.read(self._batch_size)
        except (redis.RedisError, OSError) as exc:
            # Wrong credentials do not pass: waiting would leave a worker that ingests nothing
            # looking alive. A Redis away or refusing writes (a failover's demoted replica
            # refuses XAUTOCLAIM) does: every worker would crash at once, then back off.
            if isinstance(exc, redis.AuthenticationError) or not redis_unavailable(exc):
                raise
            with self._lock:
                first, self._stream_down = not self._stream_down, True
            if first:
                log.warning("usage stream unavailable, waiting")
            self.stop.wait(self._retry_initial_s * 5)
            return []
        self.stats.last_read_at = time.time()
        with self._lock:
            if self._stream_down:
                self._stream_down = False
                log.info("usage stream available again")
            # A batch held longer than the claim timeout (its write waiting for the database)
            # is claimable by anyone, this consumer included: never take our own twice.
            batch = [(i, record) for i, record in batch if i not in self._holding]
            self._holding.update(i for i, _record in batch)
        return batch

    def _commit(self, batch: list[tuple[str, UsageRecord]]) -> int:
        """Write ``batch`` (retrying until it commits) and ack it; 0 if stopped first."""
        if not batch:
            return 0
        set_aside: list[tuple[str, UsageRecord, str]] = []
        if not self._retry(lambda: set_aside.extend(self._write(batch)), "ledger write"):
            return 0  # stopping: the batch stays pending and will be claimed
        aside = {message_id for message_id, _record, _why in set_aside}
        ids = [message_id for message_id, _record in batch if message_id not in aside]
        # Those set aside are not acked here: moved to the dead-letter stream in one script,
        # they stay pending if the worker dies before, to be claimed and set aside again.
        self._retry(lambda: self._reader.ack(ids), "ack")
        if set_aside:
            self._retry(lambda: self._reader.set_aside(set_aside), "dead-letter")
        with self._lock:
            self._holding.difference_update(message_id for message_id, _record in batch)
        self.stats.batches += 1
        self.stats.events += len(ids)
        return len(batch)

    def _write(self, batch: list[tuple[str, UsageRecord]]) -> list[tuple[str, UsageRecord, str]]:
        """Write the events of ``batch`` stamped at a time the ledger takes, in one
        transaction; the others, with why (``stamps.misdated``)."""
        now = self._clock()
        with self._factory() as session, session.begin():
            priced_from = prices_start(session)
            stored, set_aside = [], []
            for message_id, record in batch:
                entered = entered_stream_at(message_id)
                why = misdated(
                    record.started_at,
                    priced_from=priced_from,
                    reference=now if entered is None else entered,
                    reference_is=WORKER_CLOCK if entered is None else ENTERED_STREAM,
                    max_ahead_s=self._max_ahead_s,
                )
                if why is None:
                    stored.append(record)
                else:
                    set_aside.append((message_id, record, why))
            if set_aside:
                # Claimed from a worker that wrote it and died before its ack, which took it
                # (allowed a larger skew, or, where the stream says no entry time, judged by a
                # clock ahead of this one's): billed, so acked as a redelivery.
                billed = in_ledger(session, [record.request_id for _i, record, _w in set_aside])
                set_aside = [entry for entry in set_aside if entry[1].request_id not in billed]
            self.stats.inserted += write_usage(session, stored)
        self.stats.last_commit_at = time.time()
        return set_aside

    def _retry(self, action: Callable[[], None], what: str) -> bool:
        """Run ``action`` until it succeeds (True) or the consumer is stopped (False)."""
        delay = self._retry_initial_s
        while True:
            try:
                action()
                return True
            except Exception as exc:  # never drop a batch: log and try again
                self.stats.write_retries += 1
                log.warning("usage %s failed, retrying in %.1f s: %s", what, delay, exc)
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, self._retry_max_s)


def in_ledger(session: Session, request_ids: list[str]) -> set[str]:
    """Those of ``request_ids`` the ledger holds."""
    found: set[str] = set()
    for chunk in chunked(session, request_ids):
        statement = select(UsageEvent.request_id).where(UsageEvent.request_id.in_(chunk))
        found.update(session.scalars(statement))
    return found
