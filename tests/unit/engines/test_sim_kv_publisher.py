"""A simulated engine publishes its KV events over ZMQ in vLLM's format: the decoder the
gateway uses on real vLLM (``engines/kv_events.py``) reads them, and replays what a subscriber
missed as vLLM's ``replay_endpoint`` does."""

from __future__ import annotations

import httpx
import zmq
from tests.unit.engines.helpers import small_h100

from support.engine_contract import replay, replayed_prompt_blocks
from trunkline.engines import SimApp, create_sim_app, kv_events, prefix_block_hashes
from trunkline.engines.events import BlockRemoved
from trunkline.engines.kv_events import BlockStored, decode_kv_event_message
from trunkline.engines.kv_publisher import ZmqKvEventPublisher


def publishing_app(replay: str | None = None) -> SimApp:
    """A simulated engine of ``llama`` publishing its KV events (and replaying them with
    ``replay``) on free loopback ports; it answers at once."""
    return create_sim_app(
        model="llama",
        profile=small_h100(max_model_len=512),
        time_scale=0,
        kv_events_endpoint="tcp://127.0.0.1:*",
        kv_replay_endpoint=replay,
    )


async def test_stored_blocks_reach_a_subscriber_as_vllm_would_send_them() -> None:
    app = publishing_app()
    assert app.kv_publisher is not None
    context = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.connect(app.kv_publisher.endpoint)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"kv@llama")
    prompt = list(range(1000, 1100))  # six full 16-token blocks and a partial one
    try:
        async with (
            app,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://sim"
            ) as client,
        ):
            # ZMQ's slow joiner: publish until the subscription has reached the publisher.
            for attempt in range(50):
                body = {"model": "llama", "prompt": [attempt, *prompt], "max_tokens": 1}
                assert (await client.post("/v1/completions", json=body)).status_code == 200
                if subscriber.poll(100):
                    break
            message = decode_kv_event_message(subscriber.recv_multipart())
    finally:
        subscriber.close()
        context.term()
    assert message.topic == "kv@llama"
    [stored] = [event for event in message.events if isinstance(event, BlockStored)]
    tokens = [stored.token_ids[0], *prompt]  # which attempt's request it was
    assert stored.token_ids[0] <= attempt
    assert list(stored.block_hashes) == prefix_block_hashes(tokens, 16)
    assert stored.parent_block_hash is None
    assert list(stored.token_ids) == tokens[:96]


def test_a_subscriber_that_missed_messages_gets_them_replayed_as_vllm_does() -> None:
    # vLLM's replay protocol: [b"", start seq] to the ROUTER; each kept message from ``start``
    # on comes back as [b"", topic, seq, payload], then [b"", b"", -1, b""].
    publisher = ZmqKvEventPublisher(
        "tcp://127.0.0.1:*", "kv@llama", replay_endpoint="tcp://127.0.0.1:*", buffer_steps=3
    )
    assert publisher.replay_endpoint is not None
    for n in range(5):  # nobody listens: a PUB socket drops them all
        publisher(float(n), [BlockRemoved((n,))])
    try:
        messages = replay(publisher.replay_endpoint, 3)
        from_zero = replay(publisher.replay_endpoint, 0)  # only the last three are kept
    finally:
        publisher.close()
    assert [(m.topic, m.seq) for m in messages] == [("kv@llama", 3), ("kv@llama", 4)]
    assert [m.events for m in messages] == [
        (kv_events.BlockRemoved(block_hashes=(3,), medium="GPU"),),
        (kv_events.BlockRemoved(block_hashes=(4,), medium="GPU"),),
    ]
    assert [m.seq for m in from_zero] == [2, 3, 4]


async def test_the_replay_socket_returns_what_was_published_before_anyone_listened() -> None:
    # The same check as against real vLLM (tests/integration/vllm/test_vllm_kv_events.py).
    app = publishing_app(replay="tcp://127.0.0.1:*")
    assert app.kv_publisher is not None and app.kv_publisher.replay_endpoint is not None
    address, topic = app.kv_publisher.replay_endpoint, app.kv_publisher.topic.decode()
    prompt = list(range(2000, 2150))  # nine full 16-token blocks
    async with (
        app,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client,
    ):
        body = {"model": "llama", "prompt": prompt, "max_tokens": 1}
        assert (await client.post("/v1/completions", json=body)).status_code == 200

        messages = replay(address, 0)
        last = messages[-1].seq
        from_last = replay(address, last)
        after_last = replay(address, last + 1)

    assert {m.topic for m in messages} == {topic}
    assert replayed_prompt_blocks(messages)[-144:] == prompt[:144]
    assert [m.seq for m in from_last] == [last]
    assert after_last == []
