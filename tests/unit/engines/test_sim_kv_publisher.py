"""A simulated engine publishes its KV events over ZMQ in vLLM's format: the decoder the
gateway uses on real vLLM (``engines/kv_events.py``) reads them."""

from __future__ import annotations

import httpx
import zmq
from tests.unit.engines.helpers import small_h100

from trunkline.engines import create_sim_app, prefix_block_hashes
from trunkline.engines.kv_events import BlockStored, decode_kv_event_message


async def test_stored_blocks_reach_a_subscriber_as_vllm_would_send_them() -> None:
    app = create_sim_app(
        model="llama",
        profile=small_h100(max_model_len=512),
        time_scale=0,
        kv_events_endpoint="tcp://127.0.0.1:*",
    )
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
