"""The KV-event subscriber over a loopback ZMQ PUB socket speaking vLLM's wire format: events
reach the sink in order under the endpoint's id; a gap in sequence numbers or a lost publisher
clears it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

from trunkline.gateway.endpoints import KvEventSubscriber
from trunkline.snapshot import EndpointEntry


@dataclass
class Sink:
    calls: list[tuple[str, tuple[Hashable, ...], tuple[Hashable, ...], bool]] = field(
        default_factory=list
    )

    def apply(
        self,
        endpoint: str,
        stored: Iterable[Hashable] = (),
        removed: Iterable[Hashable] = (),
        cleared: bool = False,
    ) -> None:
        self.calls.append((endpoint, tuple(stored), tuple(removed), cleared))


class Publisher:
    """A vLLM-like publisher: ``[topic, seq (8 bytes big-endian), msgpack batch]``."""

    def __init__(self) -> None:
        self._context: Any = zmq.Context()
        self._socket: Any = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind("tcp://127.0.0.1:*")
        self.address: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, seq: int, events: list[object]) -> None:
        payload = msgspec.msgpack.encode([1.0, events, None])
        self._socket.send_multipart([b"kv@m", seq.to_bytes(8, "big", signed=True), payload])

    def close(self) -> None:
        self._socket.close()
        self._context.term()


def stored(*hashes: int) -> dict[str, object]:
    return {
        "type": "BlockStored",
        "block_hashes": list(hashes),
        "parent_block_hash": None,
        "token_ids": list(range(4 * len(hashes))),
        "block_size": 4,
    }


def subscribe(sink: Sink, publisher: Publisher) -> KvEventSubscriber:
    """A subscriber to ``publisher`` as endpoint ``e1``, its task started."""
    subscriber = KvEventSubscriber(
        sink, lambda: [EndpointEntry("e1", "http://e1", publisher.address)]
    )
    subscriber.sync()
    return subscriber


async def test_events_reach_the_sink_and_a_gap_clears_the_endpoint() -> None:
    publisher, sink = Publisher(), Sink()
    subscriber = subscribe(sink, publisher)
    try:
        seq = 0
        for _ in range(200):  # ZMQ's slow joiner: publish until the subscription is live
            publisher.send(seq, [stored(seq + 1000)])
            seq += 1
            await asyncio.sleep(0.01)
            if sink.calls:
                break
        assert sink.calls, "no event reached the subscriber"
        sink.calls.clear()

        publisher.send(seq, [stored(1, 2), {"type": "BlockRemoved", "block_hashes": [1]}])
        publisher.send(seq + 5, [{"type": "AllBlocksCleared"}, stored(3)])  # four lost
        for _ in range(200):
            if len(sink.calls) >= 5:
                break
            await asyncio.sleep(0.01)

        assert sink.calls == [
            ("e1", (1, 2), (), False),
            ("e1", (), (1,), False),
            ("e1", (), (), True),  # the gap: what the index knew of e1 is no longer trusted
            ("e1", (), (), True),
            ("e1", (3,), (), False),
        ]
        assert subscriber.received["e1"] >= 4
    finally:
        await subscriber.close()
        publisher.close()


async def test_an_endpoint_leaving_the_snapshot_is_cleared() -> None:
    publisher = Publisher()
    sink = Sink()
    endpoints = [EndpointEntry("e1", "http://e1", publisher.address)]
    subscriber = KvEventSubscriber(sink, lambda: endpoints)
    subscriber.sync()
    endpoints = []
    subscriber.sync()
    await subscriber.close()
    publisher.close()
    assert sink.calls == [("e1", (), (), True)]


async def until(condition: Callable[[], bool]) -> bool:
    for _ in range(500):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


async def test_the_subscription_is_live_after_the_handshake_and_a_lost_publisher_clears() -> None:
    publisher, sink = Publisher(), Sink()
    subscriber = subscribe(sink, publisher)
    try:
        assert await until(lambda: "e1" in subscriber.connected)
        assert subscriber.summary() == {"e1": {"connected": True, "events": 0}}
        publisher.send(0, [stored(1)])
        assert await until(lambda: bool(sink.calls))
        sink.calls.clear()

        publisher.close()  # the engine went away: its cache may be gone, events may be lost

        assert await until(lambda: "e1" not in subscriber.connected)
        assert sink.calls == [("e1", (), (), True)]
        assert subscriber.summary() == {"e1": {"connected": False, "events": 1}}
    finally:
        await subscriber.close()
