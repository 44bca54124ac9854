"""Decode the KV-cache events vLLM publishes over ZMQ, for precise prefix-aware routing.

With ``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:PORT", "topic": "kv@MODEL"}'`` each vLLM engine publishes, on a ZMQ PUB
socket, one multipart message per engine step that changed its prefix cache::

    [topic (utf-8), sequence number (8 bytes, big-endian), payload (msgpack)]

The payload is an ``EventBatch``: ``[ts, [event, ...], data_parallel_rank?]``. Current vLLM
(0.32) sends each event as a msgpack map tagged by ``"type"`` (``BlockStored``, ``BlockRemoved``,
``AllBlocksCleared``); earlier releases sent the same events as arrays whose first item is the
tag. Both decode here to the same typed events. Block hashes are 64-bit ints by default
(``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``) or the raw sha256 digests (bytes) when that is 0.

Pure functions, no I/O and no ZMQ import: the subscriber socket belongs to the caller. The
sequence number lets a consumer notice a gap (vLLM can replay from a ROUTER endpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import msgspec

__all__ = [
    "REPLAY_END",
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "KvBlockHash",
    "KvEvent",
    "KvEventDecodeError",
    "KvEventMessage",
    "decode_kv_event_batch",
    "decode_kv_event_message",
]

KvBlockHash: TypeAlias = int | bytes
"""vLLM's ``ExternalBlockHash``: an int (default) or a sha256 digest."""

REPLAY_END = (-1).to_bytes(8, "big", signed=True)
"""The sequence number frame that ends a replay (vLLM's ``END_SEQ``): ``[b"", b"", REPLAY_END,
b""]`` after the replayed ``[b"", topic, seq, payload]`` messages."""


class BlockStored(msgspec.Struct, frozen=True, tag="BlockStored", tag_field="type"):
    """Full blocks entered the prefix cache: ``block_hashes`` chained from ``parent_block_hash``.

    ``token_ids`` holds the tokens of all the blocks, ``block_size`` per block (a partial
    tail when vLLM hashes at a finer size than it allocates).
    """

    block_hashes: tuple[KvBlockHash, ...]
    parent_block_hash: KvBlockHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    group_idx: int | None = None


class BlockRemoved(msgspec.Struct, frozen=True, tag="BlockRemoved", tag_field="type"):
    """Blocks left the prefix cache (evicted): a router must forget them."""

    block_hashes: tuple[KvBlockHash, ...]
    medium: str | None = None
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, frozen=True, tag="AllBlocksCleared", tag_field="type"):
    """The engine dropped its whole prefix cache (e.g. ``/reset_prefix_cache``)."""


KvEvent: TypeAlias = BlockStored | BlockRemoved | AllBlocksCleared


class KvEventDecodeError(ValueError):
    """The bytes are not a vLLM KV event batch (or a message is not three frames)."""


class KvEventMessage(msgspec.Struct, frozen=True):
    """One ZMQ message: who sent it, its place in the sequence, and its events."""

    topic: str
    seq: int
    ts: float
    data_parallel_rank: int | None
    events: tuple[KvEvent, ...]


class _Batch(msgspec.Struct, array_like=True):
    ts: float
    events: list[KvEvent]
    data_parallel_rank: int | None = None


# Earlier vLLM: the same events as arrays, ["BlockStored", hashes, parent, tokens, size, ...].
class _ArrayStored(msgspec.Struct, array_like=True, tag="BlockStored"):
    block_hashes: tuple[KvBlockHash, ...]
    parent_block_hash: KvBlockHash | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None


class _ArrayRemoved(msgspec.Struct, array_like=True, tag="BlockRemoved"):
    block_hashes: tuple[KvBlockHash, ...]
    medium: str | None = None


class _ArrayCleared(msgspec.Struct, array_like=True, tag="AllBlocksCleared"):
    pass


class _ArrayBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_ArrayStored | _ArrayRemoved | _ArrayCleared]
    data_parallel_rank: int | None = None


_decoder = msgspec.msgpack.Decoder(_Batch)
_array_decoder = msgspec.msgpack.Decoder(_ArrayBatch)


def decode_kv_event_batch(payload: bytes) -> list[KvEvent]:
    """The events of one payload frame, in the order the engine produced them."""
    return _decode(payload).events


def decode_kv_event_message(frames: Sequence[bytes]) -> KvEventMessage:
    """Decode a whole multipart message as received by ``recv_multipart()``."""
    if len(frames) != 3 or len(frames[1]) != 8:
        raise KvEventDecodeError(
            f"expected [topic, 8-byte sequence number, payload], got {len(frames)} frames"
        )
    topic, seq, payload = frames
    batch = _decode(payload)
    return KvEventMessage(
        topic=topic.decode("utf-8", errors="replace"),
        seq=int.from_bytes(seq, "big", signed=True),
        ts=batch.ts,
        data_parallel_rank=batch.data_parallel_rank,
        events=tuple(batch.events),
    )


def _decode(payload: bytes) -> _Batch:
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as current:
        try:
            legacy = _array_decoder.decode(payload)
        except msgspec.DecodeError:
            raise KvEventDecodeError(f"not a vLLM KV event batch: {current}") from current
    return _Batch(legacy.ts, [_from_array(e) for e in legacy.events], legacy.data_parallel_rank)


def _from_array(event: _ArrayStored | _ArrayRemoved | _ArrayCleared) -> KvEvent:
    if isinstance(event, _ArrayStored):
        return BlockStored(
            block_hashes=event.block_hashes,
            parent_block_hash=event.parent_block_hash,
            token_ids=event.token_ids,
            block_size=event.block_size,
            lora_id=event.lora_id,
            medium=event.medium,
            lora_name=event.lora_name,
        )
    if isinstance(event, _ArrayRemoved):
        return BlockRemoved(block_hashes=event.block_hashes, medium=event.medium)
    return AllBlocksCleared()
