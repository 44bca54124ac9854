"""KV-cache events from real vLLM over ZMQ, decoded by ``trunkline.engines.kv_events``.

The first tests need no server: they pin the decoder to vLLM's wire format (and the array form
of earlier releases), with payloads laid out as vLLM's msgspec encoder writes them.
"""

from __future__ import annotations

import itertools

import msgspec
import pytest

from support.engine_contract import replay, replayed_prompt_blocks
from support.vllm import KvEventSubscriber, VllmServer, unique_prompt
from trunkline.engines.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvEventDecodeError,
    decode_kv_event_batch,
    decode_kv_event_message,
)

_encode = msgspec.msgpack.encode
SHA = bytes(range(32))  # with VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0: raw sha256 digests

# As vLLM 0.32 sends it: [ts, [events as tagged maps], data_parallel_rank].
STORED_MAP = {
    "type": "BlockStored",
    "block_hashes": [11, 22],
    "parent_block_hash": None,
    "token_ids": list(range(64)),
    "block_size": 32,
    "lora_id": None,
    "medium": "GPU",
    "lora_name": None,
    "extra_keys": [None, None],
    "group_idx": 0,
    "kv_cache_spec_kind": "full_attention",
}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            [STORED_MAP],
            [BlockStored((11, 22), None, tuple(range(64)), 32, None, "GPU", None, 0)],
            id="stored-int-hashes",
        ),
        pytest.param(
            [{**STORED_MAP, "block_hashes": [SHA], "parent_block_hash": b"\x02" * 32}],
            [BlockStored((SHA,), b"\x02" * 32, tuple(range(64)), 32, None, "GPU", None, 0)],
            id="stored-sha256-hashes",
        ),
        pytest.param(
            [{"type": "BlockRemoved", "block_hashes": [7], "medium": "GPU", "session_id": "s"}],
            [BlockRemoved((7,), "GPU")],
            id="removed-unknown-field-ignored",
        ),
        pytest.param(
            [{"type": "AllBlocksCleared"}, {"type": "BlockRemoved", "block_hashes": [1, 2]}],
            [AllBlocksCleared(), BlockRemoved((1, 2))],
            id="cleared-then-removed",
        ),
        pytest.param(
            [["BlockStored", [5], 4, [1, 2, 3], 3, None, "GPU"], ["BlockRemoved", [4], "GPU"]],
            [BlockStored((5,), 4, (1, 2, 3), 3, None, "GPU"), BlockRemoved((4,), "GPU")],
            id="array-form-with-medium",
        ),
        pytest.param(
            [["BlockStored", [5], None, [1, 2, 3], 3, None], ["AllBlocksCleared"]],
            [BlockStored((5,), None, (1, 2, 3), 3), AllBlocksCleared()],
            id="array-form-without-medium",
        ),
        pytest.param([], [], id="empty"),
    ],
)
def test_decodes_vllm_event_batches(events: list[object], expected: list[object]) -> None:
    assert decode_kv_event_batch(_encode([1.5, events, 0])) == expected
    assert decode_kv_event_batch(_encode([1.5, events])) == expected  # rank omitted


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        _encode({"ts": 1.0, "events": []}),
        _encode([1.0, [{"type": "BlockMoved", "block_hashes": [1]}]]),
        _encode([1.0, [{"type": "BlockStored", "block_hashes": [1]}]]),  # fields missing
        _encode([1.0, [["BlockStored", "not-a-list", None, [], 32]]]),
    ],
)
def test_rejects_what_is_not_an_event_batch(payload: bytes) -> None:
    with pytest.raises(KvEventDecodeError):
        decode_kv_event_batch(payload)


def test_decodes_a_whole_zmq_message() -> None:
    frames = [b"kv@m", (41).to_bytes(8, "big"), _encode([2.5, [STORED_MAP], 3])]

    message = decode_kv_event_message(frames)

    assert (message.topic, message.seq, message.ts, message.data_parallel_rank) == (
        "kv@m",
        41,
        2.5,
        3,
    )
    assert [type(e) for e in message.events] == [BlockStored]
    with pytest.raises(KvEventDecodeError):
        decode_kv_event_message(frames[:2])


# --- against real vLLM -----------------------------------------------------------------------


def test_a_request_publishes_its_prompt_blocks(vllm_server: VllmServer) -> None:
    subscriber = KvEventSubscriber(vllm_server)
    try:
        subscriber.wait_live()
        prompt = unique_prompt(200)
        tokens = vllm_server.tokenize(prompt)
        full_blocks = len(tokens) // vllm_server.block_size

        vllm_server.complete(prompt)
        messages, stored = subscriber.stored(full_blocks)
    finally:
        subscriber.close()

    assert full_blocks >= 8
    assert {m.topic for m in messages} == {vllm_server.kv_events_topic}
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    hashes = [h for event in stored for h in event.block_hashes]
    assert len(hashes) == len(set(hashes)) == full_blocks
    assert all(isinstance(h, int) for h in hashes)  # vLLM's default: 64-bit int hashes
    # The events carry the prompt's own tokens, block by block, each chained to the last.
    stored_tokens = [t for event in stored for t in event.token_ids]
    assert stored_tokens == tokens[: full_blocks * vllm_server.block_size]
    assert stored[0].parent_block_hash is None
    for previous, event in itertools.pairwise(stored):
        assert event.parent_block_hash == previous.block_hashes[-1]
    assert {e.block_size for e in stored} == {vllm_server.block_size}


def test_the_replay_socket_returns_what_was_published_before_anyone_listened(
    vllm_server: VllmServer,
) -> None:
    prompt = unique_prompt(200)
    tokens = vllm_server.tokenize(prompt)
    full = len(tokens) // vllm_server.block_size * vllm_server.block_size
    vllm_server.complete(prompt)  # no subscriber: the PUB socket drops its events

    messages = replay(vllm_server.kv_replay_endpoint, 0)

    assert full >= 8 * vllm_server.block_size
    assert {m.topic for m in messages} == {vllm_server.kv_events_topic}
    assert replayed_prompt_blocks(messages)[-full:] == tokens[:full]  # the newest blocks stored
    last = messages[-1].seq
    assert [m.seq for m in replay(vllm_server.kv_replay_endpoint, last)] == [last]
    assert replay(vllm_server.kv_replay_endpoint, last + 1) == []
