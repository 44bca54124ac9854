"""Publish a simulated engine's KV-cache events over ZMQ in vLLM's wire format.

vLLM (``--kv-events-config '{"publisher": "zmq", ...}'``) sends one multipart message per step
that changed its prefix cache: ``[topic, sequence number (8 bytes, big-endian), payload]``, the
payload a msgpack ``[ts, [event, ...], data_parallel_rank]`` whose events are maps tagged by
``"type"``. This publisher sends exactly that, built from the typed structs of
:mod:`trunkline.engines.kv_events` (the decoder the gateway uses on real vLLM), so a subscriber
cannot tell a simulated engine from a real one. ``pyzmq`` is imported only when one is created.

Like vLLM's ``replay_endpoint``, an optional ROUTER socket answers a subscriber that missed
messages: a request ``[b"", start (8 bytes, big-endian)]`` gets every kept message from
``start`` on as ``[b"", topic, seq, payload]``, then ``[b"", b"", -1 (8 bytes), b""]``. The
last ``buffer_steps`` messages are kept (vLLM's default: 10,000).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec

from trunkline.engines import kv_events as wire
from trunkline.engines.events import BlockRemoved, BlockStored, KVCacheEvent

__all__ = ["ZmqKvEventPublisher"]


class ZmqKvEventPublisher:
    """A PUB socket bound to ``endpoint`` (e.g. ``tcp://127.0.0.1:5557``); a KV event sink.
    With ``replay_endpoint``, a thread serves replay requests on a ROUTER socket bound there."""

    def __init__(
        self,
        endpoint: str,
        topic: str,
        *,
        replay_endpoint: str | None = None,
        buffer_steps: int = 10_000,
    ) -> None:
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
        self._kept: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        """The last messages sent: (sequence number, payload)."""
        self._lock = threading.Lock()
        self._running = True
        self.replay_endpoint: str | None = None
        self._replay: threading.Thread | None = None
        if replay_endpoint is not None:
            router: Any = self._context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            try:
                router.bind(replay_endpoint)
            except zmq.ZMQError:
                router.close()
                self.close()
                raise
            self.replay_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._replay = threading.Thread(
                target=self._serve_replays, args=(router,), name="kv-replay", daemon=True
            )
            self._replay.start()

    def __call__(self, now: float, events: Sequence[KVCacheEvent]) -> None:
        payload = self._encoder.encode([now, [_to_wire(e) for e in events], None])
        seq, self._seq = self._seq, self._seq + 1
        if self._replay is not None:
            with self._lock:
                self._kept.append((seq, payload))
        self._socket.send_multipart([self.topic, _seq_frame(seq), payload], flags=self._noblock)

    def _serve_replays(self, router: Any) -> None:
        """The ROUTER socket lives on this thread alone (ZMQ sockets are not thread-safe)."""
        try:
            while self._running:
                if not router.poll(50):
                    continue
                frames = router.recv_multipart()
                if len(frames) != 3:
                    continue  # not a replay request: vLLM ignores those too
                client, start = frames[0], int.from_bytes(frames[2], "big")
                with self._lock:
                    kept = [(seq, payload) for seq, payload in self._kept if seq >= start]
                for seq, payload in kept:
                    router.send_multipart([client, b"", self.topic, _seq_frame(seq), payload])
                router.send_multipart([client, b"", b"", wire.REPLAY_END, b""])
        finally:
            router.close()

    def close(self) -> None:
        self._running = False
        if self._replay is not None:
            self._replay.join()
        self._socket.close()
        self._context.term()


def _seq_frame(seq: int) -> bytes:
    return seq.to_bytes(8, "big", signed=True)


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
