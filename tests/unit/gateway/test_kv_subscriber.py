"""The KV-event subscriber over a loopback ZMQ PUB socket speaking vLLM's wire format: events
reach the sink in order under the endpoint's id; a gap in sequence numbers or a lost publisher
clears it; a failed subscription starts again."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import pickle
import sys
import tracemalloc
from collections.abc import Hashable, Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from tests.unit.gateway.kv_support import Blackhole, Publisher, Sink, stored, subscribe, until

from trunkline.errors import ConfigurationError
from trunkline.gateway.endpoints import (
    EngineState,
    KvEventCollector,
    KvEventSubscriber,
    kv_subscriber,
)
from trunkline.gateway.routing.prefix_index import KvEventIndex
from trunkline.gateway.routing.vllm_hashes import DEFAULT_SEED, VllmHashing
from trunkline.snapshot import EndpointEntry


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


async def test_blocks_an_engine_names_by_digest_are_found_by_the_gateways_own_names() -> None:
    """vLLM with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0`` sends each block's sha256 digest;
    the gateway names a prompt's blocks by the int vLLM sends by default: both must match."""
    hashing = VllmHashing()
    tokens = list(range(8))
    digests = []  # what vLLM sends: each block's sha256 of (parent, its tokens, extra keys)
    parent_digest = hashlib.sha256(pickle.dumps(DEFAULT_SEED, protocol=5)).digest()
    for start in (0, 4):
        block = (parent_digest, tuple(tokens[start : start + 4]), None)
        parent_digest = hashlib.sha256(pickle.dumps(block, protocol=5)).digest()
        digests.append(parent_digest)
    publisher, index = Publisher(), KvEventIndex()
    subscriber = subscribe(index, publisher)  # type: ignore[arg-type]
    try:
        announced = {**stored(), "block_hashes": digests, "token_ids": tokens}
        for seq in range(200):  # ZMQ's slow joiner: publish until the subscription is live
            publisher.send(seq, [announced])
            await asyncio.sleep(0.01)
            if subscriber.received.get("e1"):
                break
        assert subscriber.received.get("e1"), "no event reached the subscriber"
        assert index.matches(hashing.block_hashes(tokens, 4), None, ["e1"]) == [2]
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


async def test_the_subscription_is_live_after_the_handshake_and_a_lost_publisher_clears() -> None:
    publisher, sink = Publisher(), Sink()
    subscriber = subscribe(sink, publisher)
    try:
        assert await until(lambda: "e1" in subscriber.connected)
        assert subscriber.summary() == {"e1": {"connected": True, "events": 0}}
        # The subscription reaches the publisher a moment after the handshake: publish until
        # a message gets through.
        for seq in range(100):
            publisher.send(seq, [stored(seq + 1000)])
            if await until(lambda: bool(sink.calls), tries=5):
                break
        events = len(sink.calls)
        sink.calls.clear()

        publisher.close()  # the engine went away: its cache may be gone, events may be lost

        assert await until(lambda: "e1" not in subscriber.connected)
        assert sink.calls == [("e1", (), (), True)]
        assert events >= 1
        assert subscriber.summary() == {"e1": {"connected": False, "events": events}}
        registry = CollectorRegistry()
        registry.register(KvEventCollector(lambda: subscriber))
        exposed = generate_latest(registry).decode()
        assert 'trunkline_kv_events_connected{endpoint="e1"} 0.0' in exposed
        assert f'trunkline_kv_events_applied_total{{endpoint="e1"}} {events:.1f}' in exposed
        assert 'trunkline_kv_event_clears_total{endpoint="e1",reason="disconnect"} 1.0' in exposed
        assert 'trunkline_kv_event_clears_total{endpoint="e1",reason="gap"} 0.0' in exposed
    finally:
        await subscriber.close()


async def test_closing_after_the_last_endpoint_left_does_not_hang() -> None:
    publisher, sink = Publisher(), Sink()
    endpoints = [EndpointEntry("e1", "http://e1", publisher.address)]
    subscriber = KvEventSubscriber(sink, lambda: endpoints)
    subscriber.sync()
    await asyncio.sleep(0)  # its task starts and opens its sockets
    endpoints = []
    subscriber.sync()
    await asyncio.wait_for(subscriber.close(), timeout=10)
    publisher.close()


async def test_a_failed_subscription_is_logged_cleared_and_started_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_subscriber, "RETRY_MIN_S", 0.05)
    publisher = Publisher()

    class FailingTwice(Sink):
        failures = 0

        def apply(self, endpoint: str, stored: Iterable[Hashable] = (), **kw: Any) -> None:
            stored = tuple(stored)
            if stored and self.failures < 2:
                self.failures += 1
                raise RuntimeError("the index broke")
            super().apply(endpoint, stored, **kw)

    sink = FailingTwice()
    subscriber = KvEventSubscriber(
        sink, lambda: [EndpointEntry("e1", "http://e1", publisher.address)]
    )
    subscriber.sync()
    try:
        for seq in range(1000):  # until events flow again, after the failure and a backoff
            publisher.send(seq, [stored(seq)])
            await asyncio.sleep(0.01)
            if any(blocks for _, blocks, _, _ in sink.calls):
                break
    finally:
        await subscriber.close()
        publisher.close()
    assert sink.failures == 2 and any(blocks for _, blocks, _, _ in sink.calls)
    assert sink.calls[:2] == [("e1", (), (), True)] * 2  # what it knew is no longer trusted
    assert subscriber.clears[("e1", "error")] == 2
    # Each failed after a handshake: the backoff started over each time, not doubled.
    retries = [r for r in caplog.records if r.message == "KV event subscription failed; retrying"]
    assert [getattr(r, "retry_in_s", None) for r in retries] == [0.05, 0.05]


def test_a_gateway_without_pyzmq_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It failed at start with ``No module named 'zmq.asyncio'``: pyzmq was only a dev
    dependency, and the docs named the ``tokenizers`` extra alone for precise-prefix."""
    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.setitem(sys.modules, "zmq.asyncio", None)
    with pytest.raises(ConfigurationError, match=r"trunkline\[tokenizers\]"):
        KvEventSubscriber(Sink(), lambda: [])


async def test_a_publisher_gone_silent_without_closing_is_noticed_and_found_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An engine's host vanished (a node lost, a network partition): no FIN or RST comes,
    and a SUB socket sends nothing once subscribed, so nothing told it. Before, the
    subscription said it was connected for good, the index kept the engine's blocks, and
    once the engine came back at that address (a StatefulSet's pod, rescheduled) its events
    never reached the gateway: precise routing sent its prompts to a cache it no longer had."""
    monkeypatch.setattr(kv_subscriber, "HEARTBEAT_S", 0.05)
    publisher, sink = Publisher(), Sink()
    relay = Blackhole(publisher.address)
    await relay.start()
    subscriber = KvEventSubscriber(sink, lambda: [EndpointEntry("e1", "http://e1", relay.address)])
    subscriber.sync()
    try:
        assert await until(lambda: "e1" in subscriber.connected)
        for seq in range(100):  # the subscription reaches the publisher a moment later
            publisher.send(seq, [stored(seq + 1000)])
            if await until(lambda: bool(sink.calls), tries=5):
                break
        assert sink.calls
        sink.calls.clear()

        relay.silent = True

        assert await until(lambda: "e1" not in subscriber.connected)
        assert sink.calls == [("e1", (), (), True)]  # what it cached is no longer trusted
        assert subscriber.clears[("e1", "disconnect")] == 1

        relay.silent = False  # reachable again: the subscription is made anew
        assert await until(lambda: "e1" in subscriber.connected)
        for seq in range(100, 200):
            publisher.send(seq, [stored(seq + 1000)])
            if await until(lambda: len(sink.calls) > 1, tries=5):
                break
        assert sink.calls[1][1], "no event reached the subscriber once it was reachable again"
    finally:
        await subscriber.close()
        await relay.close()
        publisher.close()


async def test_endpoints_churned_all_day_leave_nothing_behind() -> None:
    """A gateway following autoscaled engines (each new one registered under a new id) kept,
    for every endpoint it ever followed, its KV-event counts, an empty entry in the precise
    index and its id among the removed ones: about 500 bytes each, for good."""
    index = KvEventIndex()
    current: list[EndpointEntry] = []
    subscriber = KvEventSubscriber(index, lambda: current)
    state = EngineState()

    async def churn(endpoints: int) -> int:
        nonlocal current
        for number in range(endpoints):
            endpoint = f"endpoint-{next(ids)}"
            current = [EndpointEntry(endpoint, "http://x", "tcp://127.0.0.1:1", "tcp://h:2")]
            state.sync([endpoint])
            subscriber.sync()
            index.apply(endpoint, stored=[number])
            subscriber.clears[(endpoint, "disconnect")] += 1  # what a subscription counts
            subscriber.replays[(endpoint, "failed")] += 1
            subscriber.received[endpoint] = 1
            current = []
            state.sync([])
            subscriber.sync()
        for _ in range(10):  # the cancelled subscriptions end
            await asyncio.sleep(0)
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    ids = itertools.count()
    tracemalloc.start()
    try:
        settled = await churn(2000)  # past every bounded memory
        after = await churn(2000)
    finally:
        tracemalloc.stop()
        await subscriber.close()
    assert (after - settled) / 2000 < 50, f"{(after - settled) / 2000:.0f} bytes per endpoint"
    assert len(index) == 0
