"""Subscribe to the KV-cache events of engines that publish them, and feed a prefix index.

For each snapshot endpoint with ``kv_events`` set (a ZMQ address such as ``tcp://host:5557``),
one SUB socket receives vLLM's multipart messages (decoded by
:mod:`trunkline.engines.kv_events`) and applies them, in order, to a :class:`KvEventSink` —
the routing's precise prefix index — under the endpoint's id. Subscriptions follow snapshot
changes. A gap in an engine's sequence numbers means lost events: the endpoint's blocks are
cleared rather than trusted. A ZMQ SUB socket reconnects on its own when an engine restarts.

A publisher drops what it sends before a subscriber's handshake is done (ZMQ's "slow joiner"), so
a gateway learns only blocks stored after it connected. :attr:`KvEventSubscriber.connected` says
which endpoints' subscriptions are live (a monitor socket follows each handshake); losing the
connection clears the endpoint's blocks too, since the engine may be restarting with an empty
cache and events sent meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol

from trunkline.engines.kv_events import (
    REPLAY_END,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventDecodeError,
    KvEventMessage,
    decode_kv_event_message,
)
from trunkline.snapshot import EndpointEntry

__all__ = ["KvEventSink", "KvEventSubscriber", "apply_message"]

log = logging.getLogger(__name__)

REPLAY_TIMEOUT_S = 2.0
"""How long a replay may go without a reply before the subscriber gives up on it."""


class KvEventSink(Protocol):
    """What consumes the events: ``KvEventIndex.apply`` in ``gateway/routing``."""

    def apply(
        self,
        endpoint: str,
        stored: Iterable[Hashable] = (),
        removed: Iterable[Hashable] = (),
        cleared: bool = False,
    ) -> None: ...


def apply_message(sink: KvEventSink, endpoint: str, message: KvEventMessage) -> int:
    """Apply one message's events in order; returns how many events it had."""
    for event in message.events:
        if isinstance(event, BlockStored):
            sink.apply(endpoint, stored=event.block_hashes)
        elif isinstance(event, BlockRemoved):
            sink.apply(endpoint, removed=event.block_hashes)
        elif isinstance(event, AllBlocksCleared):
            sink.apply(endpoint, cleared=True)
    return len(message.events)


class KvEventSubscriber:
    """One asyncio task and SUB socket per publishing endpoint; call :meth:`sync` on changes."""

    def __init__(self, sink: KvEventSink, endpoints: Callable[[], Sequence[EndpointEntry]]) -> None:
        import zmq.asyncio  # imported only when a gateway subscribes

        self._sink = sink
        self._endpoints = endpoints
        self._context: Any = zmq.asyncio.Context()
        self._tasks: dict[tuple[str, str | None, str | None], asyncio.Task[None]] = {}
        self.received: dict[str, int] = {}
        """Events applied per endpoint id (for tests and the health page)."""
        self.connected: set[str] = set()
        """Endpoint ids whose publisher has completed the handshake and not disconnected since."""
        self.clears: Counter[tuple[str, str]] = Counter()
        """Times an endpoint's blocks were cleared, by ``(endpoint, reason)``: ``gap`` (lost
        messages no replay recovered) or ``disconnect``."""
        self.replays: Counter[tuple[str, str]] = Counter()
        """Replays asked for, by ``(endpoint, outcome)``: ``complete`` or ``timeout``."""

    def summary(self) -> dict[str, dict[str, object]]:
        """Per subscribed endpoint id: ``connected`` and the ``events`` applied so far."""
        return {
            endpoint: {
                "connected": endpoint in self.connected,
                "events": self.received.get(endpoint, 0),
            }
            for endpoint in sorted(key[0] for key in self._tasks)
        }

    def sync(self) -> None:
        wanted = {(e.id, e.kv_events, e.kv_replay) for e in self._endpoints() if e.kv_events}
        for key in set(self._tasks) - wanted:
            self._tasks.pop(key).cancel()
            self.connected.discard(key[0])
            self._sink.apply(key[0], cleared=True)
        for key in wanted - set(self._tasks):
            endpoint_id, address, replay = key
            assert address is not None  # filtered above
            self._tasks[key] = asyncio.create_task(
                self._listen(endpoint_id, address, replay), name=f"kv-events-{endpoint_id}"
            )

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._context.term()

    async def _listen(self, endpoint: str, address: str, replay: str | None) -> None:
        import zmq
        import zmq.asyncio
        from zmq.utils.monitor import parse_monitor_message

        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"")  # vLLM's topic is "kv@<model>": take them all
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        socket.connect(address)
        poller = zmq.asyncio.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        stream = _Stream(endpoint, self._sink, self)
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())["event"]
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        self.connected.add(endpoint)
                        if replay is not None:  # what the engine sent before we listened
                            await stream.replay(self._context, replay)
                    elif endpoint in self.connected:  # disconnected: trust nothing known
                        self.connected.discard(endpoint)
                        stream.reset()
                if socket in ready:
                    await stream.receive(await socket.recv_multipart(), self._context, replay)
        finally:
            self.connected.discard(endpoint)
            socket.disable_monitor()
            monitor.close()
            socket.close()


class _Stream:
    """One publisher's messages, applied in sequence order to the sink.

    ``expected`` is the next sequence number (None: nothing known, e.g. after a disconnect,
    when the engine may restart its numbering). A message past it means lost messages: with a
    replay address they are asked for again, else (or if the engine no longer keeps them) the
    endpoint is cleared. Messages before it were already applied by a replay and are skipped.
    """

    def __init__(self, endpoint: str, sink: KvEventSink, counts: KvEventSubscriber) -> None:
        self.endpoint = endpoint
        self.expected: int | None = None
        self._sink = sink
        self._counts = counts

    def reset(self) -> None:
        self._clear("disconnect")
        self.expected = None

    def _clear(self, reason: str) -> None:
        self._sink.apply(self.endpoint, cleared=True)
        self._counts.clears[(self.endpoint, reason)] += 1

    async def receive(self, frames: list[bytes], context: Any, replay: str | None) -> None:
        message = self._decode(frames)
        if message is None or (self.expected is not None and message.seq < self.expected):
            return
        if self.expected is not None and message.seq > self.expected and replay is not None:
            await self.replay(context, replay)
            if message.seq < self.expected:
                return
        self._apply(message)

    async def replay(self, context: Any, address: str) -> None:
        """Ask the publisher for every message from ``expected`` on (from its oldest kept one
        when nothing is known) and apply them; give up after ``REPLAY_TIMEOUT_S``."""
        import zmq

        start = self.expected or 0
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(address)
        replayed = 0
        try:
            await socket.send_multipart([b"", start.to_bytes(8, "big", signed=True)])
            while True:
                if not await socket.poll(REPLAY_TIMEOUT_S * 1000):
                    log.warning(
                        "KV event replay timed out",
                        extra={"endpoint_id": self.endpoint, "replay": address},
                    )
                    self._counts.replays[(self.endpoint, "timeout")] += 1
                    return
                frames = await socket.recv_multipart()
                if frames[2:3] == [REPLAY_END]:
                    self._counts.replays[(self.endpoint, "complete")] += 1
                    return
                message = self._decode(frames[1:])
                if message is not None and (self.expected is None or message.seq >= self.expected):
                    self._apply(message)
                    replayed += 1
        finally:
            socket.close()
            if replayed:
                log.info(
                    "replayed KV events",
                    extra={"endpoint_id": self.endpoint, "messages": replayed, "from": start},
                )

    def _decode(self, frames: list[bytes]) -> KvEventMessage | None:
        try:
            return decode_kv_event_message(frames)
        except KvEventDecodeError:
            log.warning("undecodable KV event message", extra={"endpoint_id": self.endpoint})
            return None

    def _apply(self, message: KvEventMessage) -> None:
        if self.expected is not None and message.seq != self.expected:
            self._clear("gap")  # messages were lost: trust none
        count = apply_message(self._sink, self.endpoint, message)
        received = self._counts.received
        received[self.endpoint] = received.get(self.endpoint, 0) + count
        self.expected = message.seq + 1
