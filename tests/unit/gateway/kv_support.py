"""Test doubles for the KV-event subscriber: a sink recording what reaches the index, and a
vLLM-like ZMQ publisher speaking its wire format."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
import zmq.asyncio

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


async def until(condition: Callable[[], bool], tries: int = 500) -> bool:
    """Whether ``condition`` holds within ``tries`` looks 10 ms apart."""
    for _ in range(tries):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


def frames(seq: int, events_: list[object]) -> list[bytes]:
    """One message as vLLM sends it."""
    return [
        b"kv@m",
        seq.to_bytes(8, "big", signed=True),
        msgspec.msgpack.encode([1.0, events_, None]),
    ]


class Blackhole:
    """A TCP relay to ``target`` (``tcp://host:port``) that can go silent without closing
    anything: what a subscriber sees of an engine whose host vanished (a node lost, a network
    partition), where no FIN or RST ever comes."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self._target = (host, int(port))
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.address = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pump(reader, upstream_writer),
            self._pump(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.silent:  # silent: read and dropped, the connections left open
                writer.write(data)
                await writer.drain()
        writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
