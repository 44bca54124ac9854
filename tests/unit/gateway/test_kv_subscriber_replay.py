"""The KV-event subscriber with a publisher that replays what was missed (the simulated
engine's publisher, which speaks vLLM's replay protocol): a gap is filled, not cleared, unless the
engine no longer keeps it or the replay fails."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from tests.unit.gateway.kv_support import Publisher, Sink, frames, stored, until

from trunkline.engines import events
from trunkline.engines.kv_events import REPLAY_END
from trunkline.engines.kv_publisher import ZmqKvEventPublisher
from trunkline.gateway.endpoints import KvEventSubscriber, kv_subscriber
from trunkline.snapshot import EndpointEntry


class Lossy:
    """A PUB socket that loses the messages whose sequence numbers are in ``lose`` (the
    network between an engine and the gateway)."""

    def __init__(self, socket: Any, lose: set[int]) -> None:
        self._socket, self.lose = socket, lose

    def send_multipart(self, frames: list[bytes], **options: Any) -> None:
        if int.from_bytes(frames[1], "big") not in self.lose:
            self._socket.send_multipart(frames, **options)

    def close(self) -> None:
        self._socket.close()


def replaying_publisher(lose: set[int], buffer_steps: int = 100) -> ZmqKvEventPublisher:
    """The simulated engine's publisher, with a replay socket, losing ``lose``."""
    publisher = ZmqKvEventPublisher(
        "tcp://127.0.0.1:*", "kv@m", replay_endpoint="tcp://127.0.0.1:*", buffer_steps=buffer_steps
    )
    publisher._socket = Lossy(publisher._socket, lose)
    return publisher


def publish(publisher: ZmqKvEventPublisher, block: int) -> None:
    publisher(0.0, [events.BlockStored((block,), None, tuple(range(4)), 4)])


async def publish_until_received(publisher: ZmqKvEventPublisher, sink: Sink, block: int) -> int:
    """Publish blocks from ``block`` on until the sink has the last one published (a message
    sent before the subscription reached the publisher is lost, and only the next one shows
    the gap); returns that last block."""
    for last in range(block, block + 100):
        publish(publisher, last)
        if await until(lambda last=last: last in stored_blocks(sink), tries=20):  # type: ignore[misc]
            return last
    raise AssertionError(f"no block from {block} on reached the sink")


def subscribe_replaying(sink: Sink, publisher: ZmqKvEventPublisher) -> KvEventSubscriber:
    entry = EndpointEntry("e1", "http://e1", publisher.endpoint, publisher.replay_endpoint)
    subscriber = KvEventSubscriber(sink, lambda: [entry])
    subscriber.sync()
    return subscriber


def stored_blocks(sink: Sink) -> list[Hashable]:
    return [block for _, blocks, _, _ in sink.calls for block in blocks]


async def test_a_late_subscriber_learns_from_a_replay_what_was_published_before() -> None:
    publisher, sink = replaying_publisher(lose=set()), Sink()
    for block in (1, 2, 3):  # nobody subscribed yet: a PUB socket drops them
        publish(publisher, block)
    subscriber = subscribe_replaying(sink, publisher)
    try:
        assert await until(lambda: len(sink.calls) == 3)
        last = await publish_until_received(publisher, sink, 4)
    finally:
        await subscriber.close()
        publisher.close()
    # Whether a message arrived live or by a replay, each is applied once, in order.
    assert sink.calls == [("e1", (block,), (), False) for block in range(1, last + 1)]
    assert not subscriber.clears


async def test_a_gap_is_filled_by_a_replay_not_cleared() -> None:
    publisher, sink = replaying_publisher(lose={2, 3}), Sink()
    publish(publisher, 0)
    subscriber = subscribe_replaying(sink, publisher)
    try:
        assert await until(lambda: stored_blocks(sink) == [0])
        for block in (1, 2, 3, 4):  # 2 and 3 are lost on the way
            publish(publisher, block)
        assert await until(lambda: len(sink.calls) >= 5)
    finally:
        await subscriber.close()
        publisher.close()
    # Whatever the subscription missed while it was being set up was replayed too: every
    # message once, in order, and nothing cleared.
    assert sink.calls == [("e1", (block,), (), False) for block in range(5)]
    assert subscriber.received["e1"] == 5
    assert subscriber.replays[("e1", "complete")] >= 2  # on connecting, and for the gap
    assert not subscriber.clears


async def test_a_gap_older_than_what_the_engine_keeps_clears_the_endpoint() -> None:
    publisher, sink = replaying_publisher(lose={2, 3}, buffer_steps=1), Sink()
    publish(publisher, 0)
    subscriber = subscribe_replaying(sink, publisher)
    try:
        assert await until(lambda: stored_blocks(sink) == [0])
        for block in (1, 2, 3, 4):  # 1 may be lost too, if the subscription is not live yet
            publish(publisher, block)
        assert await until(lambda: 4 in stored_blocks(sink))
    finally:
        await subscriber.close()
        publisher.close()
    # The engine kept only message 4: what 2 and 3 did is unknown, so nothing is trusted.
    assert sink.calls[-2:] == [("e1", (), (), True), ("e1", (4,), (), False)]
    assert subscriber.clears == {("e1", "gap"): 1}


async def test_an_unanswered_replay_gives_up_and_the_events_still_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kv_subscriber, "REPLAY_TIMEOUT_S", 0.1)
    publisher, sink = Publisher(), Sink()
    silent = zmq.Context()
    router = silent.socket(zmq.ROUTER)  # accepts the request, never answers it
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:*")
    entry = EndpointEntry(
        "e1", "http://e1", publisher.address, router.getsockopt_string(zmq.LAST_ENDPOINT)
    )
    subscriber = KvEventSubscriber(sink, lambda: [entry])
    subscriber.sync()
    try:
        for seq in range(100):  # the subscription is live once a message gets through
            publisher.send(seq, [stored(seq + 1000)])
            await asyncio.sleep(0.05)
            if sink.calls:
                break
        assert sink.calls, "no event reached the subscriber"
        publisher.send(seq + 4, [stored(7)])  # a gap the replay cannot fill
        assert await until(lambda: ("e1", (7,), (), False) in sink.calls)
    finally:
        await subscriber.close()
        publisher.close()
        router.close()
        silent.term()
    assert sink.calls[-2:] == [("e1", (), (), True), ("e1", (7,), (), False)]
    assert subscriber.replays[("e1", "failed")] == 2  # on connecting, and for the gap
    assert subscriber.replays[("e1", "complete")] == 0


async def test_a_restarted_engines_numbering_clears_what_the_old_engine_had() -> None:
    # The new engine's first messages may arrive before its predecessor's disconnect is seen.
    sink = Sink()
    subscriber = KvEventSubscriber(sink, lambda: [])
    stream = kv_subscriber._Stream("e1", subscriber, None, None)
    for seq in range(10):
        await stream.receive(frames(seq, [stored(seq)]))
    sink.calls.clear()

    await stream.receive(frames(0, [stored(100)]))  # the new engine's first

    assert sink.calls == [("e1", (), (), True), ("e1", (100,), (), False)]
    assert subscriber.clears == {("e1", "restart"): 1}


async def test_a_replay_of_thousands_of_messages_arrives_whole() -> None:
    publisher, sink = replaying_publisher(lose=set(), buffer_steps=10_000), Sink()
    for block in range(5_000):
        publisher(0.0, [events.BlockStored((block,), None, tuple(range(64)), 64)])
    subscriber = subscribe_replaying(sink, publisher)
    try:
        assert await until(lambda: subscriber.received.get("e1", 0) == 5_000)
    finally:
        await subscriber.close()
        publisher.close()
    assert stored_blocks(sink) == list(range(5_000))
    assert not subscriber.clears


async def test_an_unusable_replay_address_leaves_the_events_flowing() -> None:
    publisher, sink = Publisher(), Sink()
    entry = EndpointEntry("e1", "http://e1", publisher.address, "tcp://127.0.0.1")  # no port
    subscriber = KvEventSubscriber(sink, lambda: [entry])
    subscriber.sync()
    try:
        for seq in range(100):
            publisher.send(seq, [stored(seq + 1000)])
            await asyncio.sleep(0.02)
            if sink.calls:
                break
        assert sink.calls, "no event reached the subscriber"
    finally:
        await subscriber.close()
        publisher.close()
    assert subscriber.replays[("e1", "failed")] >= 1


def replaying_stream(
    address: str,
) -> tuple[Sink, KvEventSubscriber, zmq.asyncio.Context, kv_subscriber._Stream]:
    """Endpoint e1's stream, replaying from ``address`` into a sink (term the context after)."""
    sink = Sink()
    subscriber = KvEventSubscriber(sink, lambda: [])
    context = zmq.asyncio.Context()
    return sink, subscriber, context, kv_subscriber._Stream("e1", subscriber, context, address)


async def test_a_replayed_message_seen_again_is_skipped_but_a_new_engines_is_not() -> None:
    publisher = replaying_publisher(lose=set())
    for block in range(10):
        publish(publisher, block)
    sink, subscriber, context, stream = replaying_stream(publisher.replay_endpoint)
    try:
        await stream.replay()
        kept = [seq_payload for seq_payload in publisher._kept]
    finally:
        context.term()
        publisher.close()
    assert stored_blocks(sink) == list(range(10))
    sink.calls.clear()
    stream.replay_address = None  # the publisher is gone: what follows is the SUB side alone

    seq, payload = kept[5]  # the SUB socket's copy of a message the replay brought
    await stream.receive([b"kv@m", seq.to_bytes(8, "big"), payload])
    assert sink.calls == []
    # A restarted engine numbers from 0 again, before its predecessor's disconnect is seen.
    await stream.receive(frames(0, [stored(100)]))
    assert sink.calls == [("e1", (), (), True), ("e1", (100,), (), False)]
    assert subscriber.clears == {("e1", "restart"): 1}


class ScriptedReplays:
    """A replay socket answering its n-th request with the messages ``answers[n]`` names by
    sequence number (each storing that block), then the end marker: what an engine whose
    ROUTER dropped replies past its send limit sends."""

    def __init__(self, answers: list[list[int]]) -> None:
        self.answers, self.starts = answers, list[int]()
        self._context = zmq.Context()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.bind("tcp://127.0.0.1:*")
        self.address: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        for answer in self.answers:
            client, _, start = self._router.recv_multipart()
            self.starts.append(int.from_bytes(start, "big"))
            for seq in answer:
                payload = msgspec.msgpack.encode([1.0, [stored(seq)], None])
                self._router.send_multipart([client, b"", b"kv@m", seq.to_bytes(8, "big"), payload])
            self._router.send_multipart([client, b"", b"", REPLAY_END, b""])

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._router.close()
        self._context.term()


async def test_a_replay_cut_short_is_asked_again_from_where_it_stopped() -> None:
    replays = ScriptedReplays([[*range(10), 15], list(range(10, 16))])  # 10-14 dropped first
    sink, subscriber, context, stream = replaying_stream(replays.address)
    try:
        await stream.replay()
    finally:
        context.term()
        replays.close()
    assert replays.starts == [0, 10]
    assert stored_blocks(sink) == list(range(16))
    assert subscriber.replays == {("e1", "complete"): 1}
    assert not subscriber.clears


async def test_a_busy_engine_is_not_lost_while_its_replay_is_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a replay runs (vLLM's 10,000 messages come in about ten rounds) the subscription
    reads nothing of its live socket, and a busy engine goes on publishing. Past ZMQ's
    default 1,000 messages held, the socket stopped reading the connection, the publisher's
    answers to its pings with it: the engine was taken as lost, its blocks cleared, what it
    had sent meanwhile dropped, and the replay asked again on reconnecting, for ever if each
    took as long."""
    monkeypatch.setattr(kv_subscriber, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(kv_subscriber, "REPLAY_TIMEOUT_S", 60.0)  # answered when the test says
    context = zmq.Context()
    publisher = context.socket(zmq.XPUB)  # hears the subscription arrive
    publisher.setsockopt(zmq.LINGER, 0)
    publisher.setsockopt(zmq.SNDHWM, 100_000)  # vLLM's
    publisher.bind("tcp://127.0.0.1:*")
    lost = publisher.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind("tcp://127.0.0.1:*")
    addresses = [s.getsockopt_string(zmq.LAST_ENDPOINT) for s in (publisher, router)]
    sink = Sink()
    subscriber = KvEventSubscriber(sink, lambda: [EndpointEntry("e1", "http://e1", *addresses)])
    subscriber.sync()
    try:
        assert await until(lambda: bool(publisher.poll(0)))  # subscribed: live from here
        publisher.recv()
        assert await until(lambda: bool(router.poll(0)))  # the replay asked on connecting
        client, _, _start = router.recv_multipart()
        for seq in range(3_000):  # a busy engine's messages while the replay is awaited
            publisher.send_multipart(frames(seq, [stored(seq)]))
        # Twenty heartbeat intervals, four times the silence that counts a publisher lost.
        await until(lambda: bool(lost.poll(0)), tries=100)
        router.send_multipart([client, b"", b"", REPLAY_END, b""])
        assert await until(lambda: subscriber.received.get("e1", 0) >= 3_000)
    finally:
        await subscriber.close()
        publisher.disable_monitor()
        lost.close()
        publisher.close()
        router.close()
        context.term()
    assert stored_blocks(sink) == list(range(3_000))
    assert not subscriber.clears
