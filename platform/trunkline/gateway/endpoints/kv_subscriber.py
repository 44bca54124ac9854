"""Subscribe to the KV-cache events of engines that publish them, and feed a prefix index.

For each snapshot endpoint with ``kv_events`` set (a ZMQ address such as ``tcp://host:5557``),
one SUB socket receives vLLM's multipart messages (decoded by
:mod:`trunkline.engines.kv_events`) and applies them, in sequence order, to a
:class:`KvEventSink` (the routing's precise prefix index) under the endpoint's id.
Subscriptions follow snapshot changes; a ZMQ SUB socket reconnects on its own when an engine
restarts; one that fails is logged and started again. :attr:`KvEventSubscriber.connected` says
which subscriptions have done their handshake (a monitor socket follows each).

What can be missed, and what is done about it:

- A publisher drops what it sends before a subscriber's subscription reaches it, a moment
  after the handshake (ZMQ's "slow joiner"), and a gateway that starts beside running engines
  missed everything they did before.
- A gap in an engine's sequence numbers means lost messages.
- A lost connection: the engine may be restarting with an empty cache (its numbering starts
  again at 0), and messages sent meanwhile are lost. What is left unread of the old
  connection is dropped and the endpoint's blocks are cleared; so are they when the numbering
  goes back without a disconnect being seen first.

With ``kv_replay`` (vLLM's ``replay_endpoint``) the subscriber asks the engine, on each
handshake, for every message it still keeps (vLLM: the last 10,000) and, on a gap, for the
missing ones. vLLM's ROUTER drops replies past its send high-water mark (1,000 queued), so a
replay cut short is asked again from where it stopped, as long as each round brings some
(:data:`MAX_REPLAY_ROUNDS`).
Without ``kv_replay``, or when the engine no longer keeps the messages or does not answer within
:data:`REPLAY_TIMEOUT_S`, a gap clears the endpoint's blocks rather than trusting a partial
picture, and a gateway learns only blocks stored after it connected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol, TypedDict

from trunkline.engines.kv_events import (
    REPLAY_END,
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventDecodeError,
    KvEventMessage,
    decode_kv_event_message,
)
from trunkline.errors import ConfigurationError
from trunkline.gateway.routing.vllm_hashes import event_block_hash
from trunkline.snapshot import EndpointEntry

__all__ = ["KvEventSink", "KvEventSubscriber", "apply_message"]

log = logging.getLogger(__name__)

REPLAY_TIMEOUT_S = 2.0
"""How long a replay may wait for its first reply before the subscriber gives up on it."""
REPLAY_PAUSE_S = 0.5
"""How long a started replay may pause before the subscriber takes it as cut short."""


class Subscription(TypedDict):
    """An endpoint's subscription at a glance (``/health``, metrics)."""

    connected: bool
    events: int


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
    """Apply one message's events in order; returns how many events it had. A block an engine
    names by its digest (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``) is applied as the int it
    would have sent, which is how the gateway names a prompt's blocks."""
    for event in message.events:
        if isinstance(event, BlockStored):
            sink.apply(endpoint, stored=map(event_block_hash, event.block_hashes))
        elif isinstance(event, BlockRemoved):
            sink.apply(endpoint, removed=map(event_block_hash, event.block_hashes))
        elif isinstance(event, AllBlocksCleared):
            sink.apply(endpoint, cleared=True)
    return len(message.events)


class KvEventSubscriber:
    """One asyncio task and SUB socket per publishing endpoint; call :meth:`sync` on changes."""

    def __init__(self, sink: KvEventSink, endpoints: Callable[[], Sequence[EndpointEntry]]) -> None:
        try:
            import zmq.asyncio  # imported only when a gateway subscribes
        except ImportError as exc:
            raise ConfigurationError(
                "routing on vLLM's KV-cache events needs pyzmq: pip install 'trunkline[tokenizers]'"
                " (or set TRUNKLINE_GATEWAY__ENGINES__KV_EVENTS=false)"
            ) from exc

        self._sink = sink
        self._endpoints = endpoints
        self._context: Any = zmq.asyncio.Context()
        self._tasks: dict[tuple[str, str | None, str | None], asyncio.Task[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        """Cancelled by :meth:`sync` and maybe not done: ``close`` awaits them before ``term``
        (which waits for their sockets to close)."""
        self.received: dict[str, int] = {}
        """Events applied per endpoint id (for tests and the health page)."""
        self.connected: set[str] = set()
        """Endpoint ids whose publisher has completed the handshake and not disconnected since.
        The subscription itself reaches the publisher a moment after the handshake, and what is
        sent in between is lost: with ``kv_replay`` the next message shows the gap and a replay
        fills it; without, a loss before the first message received goes unnoticed."""
        self.clears: Counter[tuple[str, str]] = Counter()
        """Times an endpoint's blocks were cleared, by ``(endpoint, reason)``: ``gap`` (lost
        messages no replay recovered), ``disconnect``, ``restart`` (the numbering went back) or
        ``error`` (the subscription failed and is started again)."""
        self._handshakes: Counter[str] = Counter()
        self.replays: Counter[tuple[str, str]] = Counter()
        """Replays asked for, by ``(endpoint, outcome)``: ``complete`` or ``failed`` (no end
        marker within ``REPLAY_TIMEOUT_S`` even after further rounds, or a socket error)."""

    def summary(self) -> dict[str, Subscription]:
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
        kept = {key[0] for key in wanted}
        for key in set(self._tasks) - wanted:
            task = self._tasks.pop(key)
            task.cancel()
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            self.connected.discard(key[0])
            self._sink.apply(key[0], cleared=True)
            if key[0] not in kept:  # not merely moved to another address
                self._forget(key[0])
        for key in wanted - set(self._tasks):
            endpoint_id, address, replay = key
            assert address is not None  # filtered above
            self._tasks[key] = asyncio.create_task(
                self._listen(endpoint_id, address, replay), name=f"kv-events-{endpoint_id}"
            )

    def _forget(self, endpoint: str) -> None:
        """Drop the counts of an endpoint that left the snapshot: no longer reported, they
        would otherwise be kept for every endpoint a gateway ever followed."""
        self.received.pop(endpoint, None)
        self._handshakes.pop(endpoint, None)
        for reason in CLEAR_REASONS:
            self.clears.pop((endpoint, reason), None)
        for outcome in REPLAY_OUTCOMES:
            self.replays.pop((endpoint, outcome), None)

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *self._retired]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._context.term()

    async def _listen(self, endpoint: str, address: str, replay: str | None) -> None:
        """Subscribe until cancelled: a subscription that fails (a socket error, the process
        out of file descriptors, a bug) is logged, its endpoint cleared, and started again
        after :data:`RETRY_MIN_S`, doubling up to :data:`RETRY_MAX_S` while attempts fail
        before a handshake; one that got a handshake starts the backoff over."""
        delay = RETRY_MIN_S
        while True:
            handshakes = self._handshakes[endpoint]
            try:
                await self._subscribe(endpoint, address, replay)
            except Exception:
                if self._handshakes[endpoint] > handshakes:
                    delay = RETRY_MIN_S
                log.exception(
                    "KV event subscription failed; retrying",
                    extra={"endpoint_id": endpoint, "kv": address, "retry_in_s": delay},
                )
                self._clear(endpoint, "error")
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_S)

    def _apply(self, endpoint: str, message: KvEventMessage) -> None:
        count = apply_message(self._sink, endpoint, message)
        self.received[endpoint] = self.received.get(endpoint, 0) + count

    def _clear(self, endpoint: str, reason: str) -> None:
        """Forget what the index knew of ``endpoint``, counted under ``reason``."""
        self._sink.apply(endpoint, cleared=True)
        self.clears[(endpoint, reason)] += 1

    async def _subscribe(self, endpoint: str, address: str, replay: str | None) -> None:
        import zmq
        import zmq.asyncio
        from zmq.utils.monitor import parse_monitor_message

        socket: Any = None
        monitor: Any = None
        stream = _Stream(endpoint, self, self._context, replay)
        try:
            socket = subscription_socket(self._context)
            events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
            monitor = socket.get_monitor_socket(events)
            socket.connect(address)
            poller = zmq.asyncio.Poller()
            poller.register(socket, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            while True:
                ready = dict(await poller.poll())
                if monitor in ready:
                    event = parse_monitor_message(await monitor.recv_multipart())["event"]
                    if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                        self.connected.add(endpoint)
                        self._handshakes[endpoint] += 1
                        if replay is not None:  # what the engine sent before we listened
                            await stream.replay()
                    elif endpoint in self.connected:  # disconnected: trust nothing known
                        self.connected.discard(endpoint)
                        while await socket.poll(0):  # the lost connection's leftovers
                            await socket.recv_multipart()
                        stream.reset()
                    continue  # ``ready`` may be stale: the socket drained, or a replay ran
                if socket in ready:
                    await stream.receive(await socket.recv_multipart())
        finally:
            self.connected.discard(endpoint)
            if monitor is not None:
                socket.disable_monitor()
                monitor.close()
            if socket is not None:
                socket.close()


def subscription_socket(context: Any) -> Any:
    """A SUB socket of ``context`` taking every message, set up to notice a lost publisher;
    not connected yet."""
    import zmq

    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")  # vLLM's topic is "kv@<model>": take them all
    # A SUB socket sends nothing once subscribed: without heartbeats a publisher whose
    # host vanished (no FIN, no RST) stays "connected" for good, and once it is back at
    # that address its events never come. The publisher's I/O thread answers the pings
    # (ZMTP 3.1), however busy the engine.
    heartbeat_ms = max(1, round(HEARTBEAT_S * 1000))
    socket.setsockopt(zmq.HEARTBEAT_IVL, heartbeat_ms)
    socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_MISSED * heartbeat_ms)
    socket.setsockopt(zmq.HEARTBEAT_TTL, HEARTBEAT_MISSED * heartbeat_ms)
    # The pings' answers come behind the live messages: a socket full of unread ones
    # (a replay runs, the event loop is busy) stops reading them, and would take a
    # busy engine as lost within seconds at ZMQ's default 1,000.
    socket.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
    # Heartbeats start once connected: a connect whose SYNs go unanswered (the engine's host
    # gone) waited for the kernel to give up, about 127 s, before ZMQ tried again and resolved
    # the name anew (a StatefulSet pod rescheduled at another address).
    socket.setsockopt(zmq.CONNECT_TIMEOUT, max(1, round(CONNECT_TIMEOUT_S * 1000)))
    return socket


HEARTBEAT_S = 1.0
"""How often the subscription pings its publisher; unanswered for :data:`HEARTBEAT_MISSED`
times that, the connection is taken as lost (the endpoint cleared) and made again."""
HEARTBEAT_MISSED = 5
CONNECT_TIMEOUT_S = 2.0
"""How long a subscription's TCP connect may wait for its publisher's answer before it is
made again (ZMQ's own reconnect interval, 0.1 s, after it): as long as the gateway's connect
to an engine (``TRUNKLINE_GATEWAY__CONNECT_TIMEOUT_S``'s default)."""
RECEIVE_HWM = 10_000
"""Live messages a subscription holds unread while it replays or the event loop is busy: as
many as vLLM keeps for a replay (a gateway further behind could not catch up by one anyway).
Beyond it the socket stops reading its connection, pings' answers included, and the engine
is taken as lost after :data:`HEARTBEAT_MISSED` beats."""
CLEAR_REASONS = ("gap", "disconnect", "restart", "error")
REPLAY_OUTCOMES = ("complete", "failed")
RETRY_MIN_S = 1.0
"""The first wait before a failed subscription is started again."""
RETRY_MAX_S = 30.0
"""The longest wait before a failed subscription is started again."""
MAX_REPLAY_ROUNDS = 50
"""Requests one replay may take while each brings more messages (vLLM's ROUTER sends about
1,000 before dropping the rest; it keeps 10,000)."""


class _Stream:
    """One publisher's messages, applied in sequence order to the sink.

    ``expected`` is the next sequence number (None: nothing known yet, or since a reset). A
    live message past it means lost messages: replayed when the endpoint has a replay address,
    else (and when the engine no longer keeps them) the endpoint is cleared. A live message
    before it is a copy when a replay since the last live message applied the same payload
    under that number (the replay and the SUB socket overlap); otherwise the numbering went
    back, i.e. the engine restarted: the endpoint is cleared (and replayed from the start).
    """

    def __init__(
        self, endpoint: str, owner: KvEventSubscriber, context: Any, replay: str | None
    ) -> None:
        self.endpoint = endpoint
        self.expected: int | None = None
        self._replayed: dict[int, int] = {}
        """The payloads' hashes of what replays applied since the last live message, by
        sequence number: a live message before ``expected`` with the same payload is a copy;
        one with another payload comes from a restarted engine."""
        self._owner = owner
        self._context = context
        self.replay_address = replay
        """Where the publisher replays missed messages (None: it does not)."""

    def reset(self) -> None:
        self._owner._clear(self.endpoint, "disconnect")
        self.expected = None
        self._replayed = {}

    async def receive(self, frames: list[bytes]) -> None:
        message = self._decode(frames)
        if message is None:
            return
        expected = self.expected
        if expected is not None and message.seq != expected:
            if message.seq < expected and self._replayed.get(message.seq) == hash(frames[2]):
                return  # a replay applied it already
            if message.seq < expected:  # the numbering went back: the engine restarted
                self._owner._clear(self.endpoint, "restart")
                self.expected, self._replayed = None, {}
            if self.replay_address is not None:
                await self.replay()
                if self.expected is not None and message.seq < self.expected:
                    return
        self._replayed = {}
        self._apply(message)

    async def replay(self) -> None:
        """Ask the publisher for every message from ``expected`` on (from its oldest kept one
        when nothing is known) and apply them, in as many rounds as it takes while each brings
        some (:data:`MAX_REPLAY_ROUNDS`)."""
        for _ in range(MAX_REPLAY_ROUNDS):
            outcome, progressed = await self._replay_round()
            if outcome != "cut" or not progressed:
                break
        self._owner.replays[(self.endpoint, "complete" if outcome == "complete" else "failed")] += 1

    async def _replay_round(self) -> tuple[str, bool]:
        """One request: ``complete`` (the end marker came), ``cut`` (replies were lost on the
        way, or the end never came) or ``error``; and whether any message was applied."""
        import zmq

        address = self.replay_address
        assert address is not None  # replays are asked only of publishers that replay
        start = self.expected or 0
        socket: Any = None
        replayed = 0
        try:
            socket = self._context.socket(zmq.DEALER)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.RCVHWM, 0)  # no limit here: the engine's own still applies
            socket.connect(address)
            await socket.send_multipart([b"", start.to_bytes(8, "big", signed=True)])
            while True:
                # vLLM sends a replay in one burst: once it started, a pause means the rest
                # (or the end marker) was dropped.
                wait_s = REPLAY_TIMEOUT_S if not replayed else REPLAY_PAUSE_S
                if not await socket.poll(wait_s * 1000):
                    log.warning(
                        "KV event replay timed out",
                        extra={"endpoint_id": self.endpoint, "replay": address},
                    )
                    return "cut", replayed > 0
                frames = await socket.recv_multipart()
                if frames[2:3] == [REPLAY_END]:
                    return "complete", replayed > 0
                message = self._decode(frames[1:])
                if message is None or (self.expected is not None and message.seq < self.expected):
                    continue
                if replayed and message.seq != self.expected:
                    return "cut", True  # replies were dropped on the way: ask again
                self._apply(message)  # the first may be past ``expected``: no longer kept
                self._replayed[message.seq] = hash(frames[3])
                replayed += 1
        except zmq.ZMQError:
            log.exception("KV event replay failed", extra={"endpoint_id": self.endpoint})
            return "error", replayed > 0
        finally:
            if socket is not None:
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
            self._owner._clear(self.endpoint, "gap")  # messages were lost: trust none
        self._owner._apply(self.endpoint, message)
        self.expected = message.seq + 1
