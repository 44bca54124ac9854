"""Publish a simulated engine's KV-cache events over ZMQ in vLLM's wire format.

vLLM (``--kv-events-config '{"publisher": "zmq", ...}'``) sends one multipart message per step
that changed its prefix cache: ``[topic, sequence number (8 bytes, big-endian), payload]``, the
payload a msgpack ``[ts, [event, ...], data_parallel_rank]`` whose events are maps tagged by
``"type"``. This publisher sends exactly that, built from the typed structs of
:mod:`trunkline.engines.kv_events` (the decoder the gateway uses on real vLLM), so a subscriber
cannot tell a simulated engine from a real one. ``pyzmq`` is imported only when one is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from trunkline.engines import kv_events as wire
from trunkline.engines.events import BlockRemoved, BlockStored, KVCacheEvent

__all__ = ["ZmqKvEventPublisher"]


class ZmqKvEventPublisher:
    """A PUB socket bound to ``endpoint`` (e.g. ``tcp://127.0.0.1:5557``); a KV event sink."""

    def __init__(self, endpoint: str, topic: str) -> None:
        import zmq  # an optional dependency: only simulated engines that publish need it

        self.topic = topic.encode()
        self._context: Any = zmq.Context()
        self._socket: Any = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._noblock = zmq.NOBLOCK

    def __call__(self, now: float, events: Sequence[KVCacheEvent]) -> None:
        payload = self._encoder.encode([now, [_to_wire(e) for e in events], None])
        frames = [self.topic, self._seq.to_bytes(8, "big", signed=True), payload]
        self._seq += 1
        self._socket.send_multipart(frames, flags=self._noblock)

    def close(self) -> None:
        self._socket.close()
        self._context.term()


def _to_wire(event: KVCacheEvent) -> wire.KvEvent:
    if isinstance(event, BlockStored):
        return wire.BlockStored(
            block_hashes=event.block_hashes,
            parent_block_hash=event.parent_block_hash,
            token_ids=event.token_ids,
            block_size=event.block_size,
            lora_id=event.lora_id,
            medium=event.medium,
        )
    if isinstance(event, BlockRemoved):
        return wire.BlockRemoved(block_hashes=event.block_hashes, medium=event.medium)
    return wire.AllBlocksCleared()
