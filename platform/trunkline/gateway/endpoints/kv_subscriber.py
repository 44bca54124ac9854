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
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol

from trunkline.engines.kv_events import (
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
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.received: dict[str, int] = {}
        """Events applied per endpoint id (for tests and the health page)."""
        self.connected: set[str] = set()
        """Endpoint ids whose publisher has completed the handshake and not disconnected since."""

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
        wanted = {(e.id, e.kv_events) for e in self._endpoints() if e.kv_events}
        for key in set(self._tasks) - wanted:
            self._tasks.pop(key).cancel()
            self.connected.discard(key[0])
            self._sink.apply(key[0], cleared=True)
        for endpoint_id, address in wanted - set(self._tasks):
            self._tasks[(endpoint_id, address)] = asyncio.create_task(
                self._listen(endpoint_id, address), name=f"kv-events-{endpoint_id}"
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

    async def _listen(self, endpoint: str, address: str) -> None:
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
        last_seq: int | None = None
        try:
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())["event"]
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        self.connected.add(endpoint)
                    elif endpoint in self.connected:  # disconnected: trust nothing known
                        self.connected.discard(endpoint)
                        self._sink.apply(endpoint, cleared=True)
                        last_seq = None
                if socket in ready:
                    last_seq = self._receive(endpoint, await socket.recv_multipart(), last_seq)
        finally:
            self.connected.discard(endpoint)
            socket.disable_monitor()
            monitor.close()
            socket.close()

    def _receive(self, endpoint: str, frames: list[bytes], last_seq: int | None) -> int | None:
        """Apply one message; returns the sequence number to expect the next one after."""
        try:
            message = decode_kv_event_message(frames)
        except KvEventDecodeError:
            log.warning("undecodable KV event message", extra={"endpoint_id": endpoint})
            return last_seq
        if last_seq is not None and message.seq != last_seq + 1:
            self._sink.apply(endpoint, cleared=True)  # events were lost: trust none
        count = apply_message(self._sink, endpoint, message)
        self.received[endpoint] = self.received.get(endpoint, 0) + count
        return message.seq
