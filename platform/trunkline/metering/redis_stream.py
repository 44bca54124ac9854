"""The usage stream on Redis: the gateways' emitter (XADD in batches from a background task,
never blocking a response) and the ingest consumer's reader (a consumer group, acked only after
the ledger committed, so a crashed consumer's messages stay pending and are claimed again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis
import redis.asyncio as aioredis

from trunkline.kit.redis_errors import redis_unavailable
from trunkline.kit.redis_replies import reply_text
from trunkline.metering.schemas import UsageRecord, decode_usage, encode_usage
from trunkline.metering.stream import log_set_aside

log = logging.getLogger(__name__)


_APPEND_LUA = """
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
return #ARGV
"""
"""One stream entry per event, a whole batch per round trip: the script runs XADD for each
event server-side, so the gateway pays one command, not one per event. The stream is never
trimmed: an entry leaves it when the ledger has it (acked and deleted together), so a backlog
is events not yet billed, and trimming it would drop them without a word."""


_STOP = object()
"""Queued by ``close``: the flusher sends everything before it, then returns."""


def stream_name(key_prefix: str) -> str:
    """The Redis stream gateways append usage events to."""
    return f"{key_prefix}:usage"


def dead_letter_stream(stream: str) -> str:
    """Where usage the ledger does not take is kept: ``<stream>:dead``, each entry the event
    as it was sent (field ``e``) and why it was set aside (field ``error``)."""
    return f"{stream}:dead"


def append_dead_letters(
    client: redis.Redis, stream: str, entries: list[tuple[UsageRecord, str]]
) -> None:
    """Keep these (event, why) in the dead-letter stream of ``stream``, in one transaction:
    for events taken out of the ledger (``metering.set_aside``), not read from the stream."""
    with client.pipeline(transaction=True) as pipe:
        for record, reason in entries:
            pipe.xadd(dead_letter_stream(stream), {b"e": encode_usage(record), b"error": reason})
        pipe.execute()


READ_TIMEOUT_S = 5.0
"""How long a call of a usage reader's client may wait on Redis (its reads never block)."""


def reader_client(url: str) -> redis.Redis:
    """A client for :class:`RedisUsageReader` whose calls give up after ``READ_TIMEOUT_S``: a
    Redis that stops answering (frozen, a partition leaving the connection half-open) held a
    read for ever, and the worker looked alive while it ingested nothing; a timeout is an
    outage the consumer waits out, and its next read connects again."""
    return redis.Redis.from_url(
        url, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=READ_TIMEOUT_S
    )


class RedisUsageEmitter:
    def __init__(self, client: aioredis.Redis, stream: str, *, max_batch: int = 500) -> None:
        self._client = client
        self._stream = stream
        self._max_batch = max_batch
        self._queue: asyncio.Queue[UsageRecord | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._append = client.register_script(_APPEND_LUA)
        self.held = 0
        """Events emitted and not yet in the stream: queued, or in the batch being sent."""

    def emit(self, record: UsageRecord) -> None:
        self.held += 1
        self._queue.put_nowait(record)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-emitter")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (waiting up to ``timeout_s`` for Redis), then stop."""
        if self._task is None:
            await self._flush_remaining()
            return
        self._queue.put_nowait(_STOP)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            log.error("usage events lost at shutdown", extra={"events": self.held})

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stopping = False
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            await self._send_with_retry(batch)  # type: ignore[arg-type]
            if stopping:
                return

    async def _send_with_retry(self, batch: list[UsageRecord]) -> None:
        delay = 0.05
        while True:
            try:
                await self._send(batch)
                return
            except (redis.RedisError, OSError) as exc:
                # Keep the events in memory while Redis is away or refuses writes (a replica
                # after a failover, out of memory); never drop them. A batch Redis applied
                # before the connection broke is sent again: ingest drops the duplicates on
                # request id. Refused for another reason (the gateway's user lost its
                # permissions, its password changed), they are kept as well: ending here kept
                # every later event in memory for good, after Redis took writes again.
                if redis_unavailable(exc):
                    log.warning("usage stream unavailable, retrying", extra={"events": self.held})
                else:
                    log.error(
                        "usage stream refused the events, retrying: %s",
                        exc,
                        extra={"events": self.held},
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _send(self, batch: list[UsageRecord]) -> None:
        await self._append(keys=[self._stream], args=[encode_usage(record) for record in batch])
        self.held -= len(batch)

    async def _flush_remaining(self) -> None:
        batch: list[UsageRecord] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, UsageRecord):
                batch.append(item)
        for start in range(0, len(batch), self._max_batch):
            try:
                await self._send(batch[start : start + self._max_batch])
            except (redis.RedisError, OSError) as exc:
                log.error("usage events lost at shutdown: %s", exc, extra={"events": self.held})
                return


_FORGET_LUA = """
local forgotten = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return forgotten -- no stream (XINFO answers "no such key", not NOGROUP): the read makes it
end
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info['name'] ~= ARGV[2] and info['pending'] == 0
      and info['idle'] >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    table.insert(forgotten, info['name'])
  end
end
return forgotten
"""
"""Delete the group's other consumers that hold no pending entry and have not read for
``ARGV[3]`` ms; their names. Atomic: a consumer that reads between the check and the delete
would lose its pending entries with it (``XGROUP DELCONSUMER`` drops them)."""
FORGET_IDLE_CONSUMERS_MS = 3_600_000
"""A consumer that has not read for an hour and holds nothing is a worker that died (each
``trunkline worker`` process reads under a name of its own): it is removed from the group, so
``XINFO CONSUMERS`` lists live readers only. A live one that was merely idle is made again by
its next read."""


_ACK_LUA = """
for i = 2, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
end
return #ARGV - 1
"""
"""Ack and delete entries ``ARGV[2..]`` of group ``ARGV[1]`` together (ids a thousand at a
time: Lua's ``unpack`` takes no more than a few thousand). A script, not a MULTI: Redis out of
memory refuses every command queued in a MULTI, XACK and XDEL included, and a backlog that
filled Redis (no worker ingesting for a while) is exactly when the acks must go through,
since they are what frees the memory."""


_DEAD_LETTER_LUA = """
redis.call('XACK', KEYS[1], ARGV[1], '0-0')
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 2, i + 1 + n))
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
  i = i + 2 + n
end
return 0
"""
"""Move entries of stream ``KEYS[1]`` (group ``ARGV[1]``) to the dead-letter stream
``KEYS[2]``: ``ARGV[2..]`` is, per entry, its id, how many field arguments follow, and those.
Each is added there before it is acked and deleted here, so a failure leaves it in the stream,
never in neither. Out of memory too: Redis refuses a command that needs memory only as a
script's first write (it cannot stop one half way), so the script begins with a write that
needs none and changes nothing (an ack of ``0-0``), as ``#!lua flags=allow-oom``, Redis 7's
way of saying it, would fail to load on Redis 6. Refused, a batch of events set aside (no ack
of its own to free room first) was retried for ever while the backlog that filled Redis waited
behind it; what the script adds there it takes from the stream."""


USAGE_GROUP = "ingest"
"""The consumer group the usage workers read the stream through."""


def create_usage_group(client: redis.Redis, stream: str, group: str = USAGE_GROUP) -> None:
    """Create the usage stream's consumer group (and the stream) unless it exists, reading
    from the stream's start. Redis refuses it at ``maxmemory``, as every command that may
    grow memory: made only by a worker, a backlog that filled Redis before any worker ever
    ran could never be read. The control plane makes it at its start too."""
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class RedisUsageReader:
    """Consumer-group reader; claims messages idle longer than ``claim_idle_ms``.

    An entry that does not decode as a usage event the ledger can store would block the group
    for ever: it is copied to ``<stream>:dead`` and acked, and the reason is logged; so is an
    event the consumer sets aside (``set_aside``: stamped by a wrong clock). Every
    ``forget_every_s`` a read also removes dead consumers from the group
    (:data:`FORGET_IDLE_CONSUMERS_MS`).
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        *,
        group: str = USAGE_GROUP,
        consumer: str = "ingest-1",
        claim_idle_ms: int = 30_000,
        forget_idle_ms: int = FORGET_IDLE_CONSUMERS_MS,
        forget_every_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._stream = stream
        self._group = group
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._forget_idle_ms = forget_idle_ms
        self._forget_every_s = forget_every_s
        self._clock = clock
        self._forget = client.register_script(_FORGET_LUA)
        self._ack = client.register_script(_ACK_LUA)
        self._move_dead = client.register_script(_DEAD_LETTER_LUA)
        self._forgot_at: float | None = None
        self.dead_lettered = 0
        # Replies as Redis sends them (no per-entry dicts): a second client on the same pool,
        # so the caller's client keeps its usual replies.
        self._raw = redis.Redis(connection_pool=client.connection_pool)
        for command in ("XREADGROUP", "XAUTOCLAIM"):
            self._raw.set_response_callback(command, _as_sent)
        try:
            self.ensure_group()
        except Exception as exc:
            if not redis_unavailable(exc):
                raise
            # Started before Redis: reads fail as an outage until it answers, then the first
            # read finds no group and makes it.
            log.warning("Redis is not answering (%s); reading usage once it does", exc)

    def ensure_group(self) -> None:
        """Create the group (and stream) if missing: a Redis restarted without its data."""
        create_usage_group(self._client, self._stream, self._group)

    def forget_dead_consumers(self) -> list[str]:
        """Remove the group's other consumers holding nothing that have not read for
        ``forget_idle_ms``; their names."""
        names: Any = self._forget(
            keys=[self._stream], args=[self._group, self._consumer, self._forget_idle_ms]
        )
        return [reply_text(name) for name in names]

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        now = self._clock()
        if self._forgot_at is None or now - self._forgot_at >= self._forget_every_s:
            # Before reading: if Redis fails here, nothing was read to lose.
            self._forget_dead_consumers_logged()
            self._forgot_at = now
        try:
            messages = self._read_raw(max_count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()
            messages = self._read_raw(max_count)
        out = []
        poisoned: list[tuple[Any, Any, str]] = []
        for message_id, fields in messages:
            if not fields:  # deleted while pending
                continue
            try:
                if fields[0] != b"e":
                    raise KeyError("no 'e' field")
                out.append((message_id.decode(), decode_usage(fields[1])))
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error(
                    "usage entry is not a usage event the ledger can store; "
                    "moved to the dead-letter stream",
                    extra={"message_id": reply_text(message_id), "error": str(exc)},
                )
                poisoned.append(
                    (message_id, dict(zip(fields[::2], fields[1::2], strict=True)), str(exc))
                )
        if poisoned:
            self._dead_letter(poisoned)
        return out

    def _forget_dead_consumers_logged(self) -> None:
        try:
            forgotten = self.forget_dead_consumers()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return  # no group yet: the read makes it
        if forgotten:
            log.info(
                "removed dead consumers from the usage group",
                extra={"consumers": forgotten, "group": self._group},
            )

    def _read_raw(self, max_count: int) -> list[tuple[Any, Any]]:
        claimed: Any = self._raw.xautoclaim(
            self._stream, self._group, self._consumer, self._claim_idle_ms, "0-0", count=max_count
        )
        messages = list(claimed[1])
        if len(messages) < max_count:
            fresh: Any = self._raw.xreadgroup(
                self._group, self._consumer, {self._stream: ">"}, count=max_count - len(messages)
            )
            # RESP3 answers a map of streams, RESP2 a list of [stream, entries] pairs
            replies = fresh.values() if isinstance(fresh, dict) else (p[1] for p in fresh or [])
            for items in replies:
                messages.extend(items)
        return messages

    def set_aside(self, entries: list[tuple[str, UsageRecord, str]]) -> None:
        self._dead_letter(
            [(message_id, {b"e": encode_usage(record)}, why) for message_id, record, why in entries]
        )
        for _id, record, reason in entries:  # once it is done, not at every try
            log_set_aside(record, reason)

    def _dead_letter(self, entries: list[tuple[Any, Any, str]]) -> None:
        """Move (id, fields, why) entries to ``<stream>:dead``, the reason as field ``error``
        (``_DEAD_LETTER_LUA``: out of memory too)."""
        args: list[Any] = [self._group]
        for message_id, fields, reason in entries:
            flat = [part for pair in {**fields, b"error": reason}.items() for part in pair]
            args += [message_id, len(flat), *flat]
        self._move_dead(keys=[self._stream, dead_letter_stream(self._stream)], args=args)
        self.dead_lettered += len(entries)

    def ack(self, ids: list[str]) -> None:
        """Done with these entries: acknowledged and deleted (``_ACK_LUA``: out of memory
        too). A stream only appended to kept every event ever ingested (about 670 bytes each)
        until Redis ran out of memory."""
        if ids:
            self._ack(keys=[self._stream], args=[self._group, *ids])

    def backlog(self) -> int:
        """The stream's length: an entry leaves it when acked, so all it holds is backlog."""
        return int(self._client.xlen(self._stream))


def _as_sent(response: Any, **_options: Any) -> Any:
    return response
