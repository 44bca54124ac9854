"""The header-read and keep-alive timeouts, over raw sockets to a real gateway app under
uvicorn: a connection whose request head is late is closed; a request whose head came in time
is not cut, however slowly its body comes (the body timeout governs that) or however long its
answer streams; a kept-alive connection waits for its next request as long as the keep-alive
timeout says, the header timeout counting only from that request's first byte."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.conftest import default_world, gateway_app
from tests.unit.gateway.upstreams import chat_any, sse_events

from support.gateway import serve_on_loopback
from support.raw_http import (
    GENEROUS_S,
    connect,
    header_deadline_passed,
    read_response,
    until_closed,
)
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings

HEADER_TIMEOUT_S = 0.3
KEEP_ALIVE_TIMEOUT_S = 0.9
BODY_TIMEOUT_S = 2.0
CHAT = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}).encode()


class HeldStream(httpx.AsyncByteStream):
    """An engine's stream that sends its first event, then the rest once ``release`` is set."""

    def __init__(self, events: list[bytes], release: asyncio.Event) -> None:
        self.events = events
        self.release = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.events[0]
        await self.release.wait()
        for event in self.events[1:]:
            yield event


@dataclass
class Gateway:
    url: str
    key: str
    release: asyncio.Event

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await connect(self.url)

    def head(self, method: str, path: str, *extra: str) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "host: gateway", *extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def chat_head(self, length: int) -> bytes:
        auth = f"authorization: Bearer {self.key}"
        kind = "content-type: application/json"
        return self.head("POST", "/v1/chat/completions", auth, kind, f"content-length: {length}")

    async def header_deadline_passed(self) -> None:
        await header_deadline_passed(self.url)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    release = asyncio.Event()

    def engine(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            events = sse_events("llama-8b-served", with_usage=False)
            stream = HeldStream(events, release)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)
        return chat_any(request)

    world = default_world()
    key = world.add_key()
    world.publish()
    settings = GatewaySettings(
        snapshot_poll_s=0.05,
        header_timeout_s=HEADER_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    app = gateway_app(world, InMemoryUsageStream(), settings, transport=httpx.MockTransport(engine))
    async with serve_on_loopback(
        app,
        header_timeout_s=settings.header_timeout_s,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
    ) as url:
        yield Gateway(url, key, release)
    release.set()


async def dribble(writer: asyncio.StreamWriter, byte: bytes) -> None:
    """``byte`` every 20 ms until well past the test's patience (or the server's close)."""
    with contextlib.suppress(ConnectionError):
        for _ in range(int(GENEROUS_S / 0.02) * 2):
            writer.write(byte)
            await writer.drain()
            await asyncio.sleep(0.02)


async def dribbled_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """What the server answers a request head sent a byte every 20 ms, until it closes."""
    writer.write(b"GET /livez HTTP/1.1\r\nhost: gateway\r\nx-padding: ")
    sending = asyncio.create_task(dribble(writer, b"a"))
    try:
        return await until_closed(reader)
    finally:
        sending.cancel()


async def test_a_connection_sending_nothing_is_closed_without_an_answer(gateway: Gateway) -> None:
    reader, writer = await gateway.connect()
    try:
        assert await until_closed(reader) == b""
    finally:
        writer.close()


async def test_headers_dribbled_byte_by_byte_are_cut_at_the_deadline_with_a_408(
    gateway: Gateway,
) -> None:
    reader, writer = await gateway.connect()
    try:
        received = await dribbled_head(reader, writer)
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"connection: close" in received


async def test_requests_whose_heads_come_in_time_are_answered_on_a_kept_alive_connection(
    gateway: Gateway,
) -> None:
    reader, writer = await gateway.connect()
    try:
        writer.write(gateway.head("GET", "/livez"))
        first = await read_response(reader)
        writer.write(gateway.head("GET", "/livez"))  # promptly, on the same connection
        second = await read_response(reader)
        writer.write(gateway.head("GET", "/livez") * 2)  # pipelined
        third, fourth = await read_response(reader), await read_response(reader)
        # A head begun is due within the header timeout (uvicorn's own keep-alive timeout
        # stops at its first byte).
        writer.write(b"GET /livez HTTP/1.1\r\n")
        late = await until_closed(reader)
    finally:
        writer.close()
    assert [r[0] for r in (first, second, third, fourth)] == [200, 200, 200, 200]
    assert late.startswith(b"HTTP/1.1 408 ")

    async with httpx.AsyncClient(base_url=gateway.url) as client:
        chat = await client.post(
            "/v1/chat/completions",
            content=CHAT,
            headers={"Authorization": f"Bearer {gateway.key}"},
        )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"]


@contextlib.asynccontextmanager
async def idle_after_a_request(
    gateway: Gateway,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection that was answered a request, then idle longer than the header timeout
    (and, by a margin of the test's own, less than the keep-alive timeout)."""
    reader, writer = await gateway.connect()
    try:
        writer.write(gateway.head("GET", "/livez"))
        status, _headers, _body = await read_response(reader)
        assert status == 200
        await gateway.header_deadline_passed()
        yield reader, writer
    finally:
        writer.close()


async def test_a_kept_alive_connection_idle_past_the_header_timeout_is_still_served(
    gateway: Gateway,
) -> None:
    async with idle_after_a_request(gateway) as (reader, writer):
        writer.write(gateway.head("GET", "/livez"))
        status, _headers, _body = await read_response(reader)
    assert status == 200


async def test_an_idle_kept_alive_connection_is_closed_silently_after_the_keep_alive_timeout(
    gateway: Gateway,
) -> None:
    async with idle_after_a_request(gateway) as (reader, _writer):
        open_past_the_header_timeout = not reader.at_eof()
        received = await until_closed(reader)
    assert open_past_the_header_timeout
    assert received == b""


async def test_a_kept_alive_connections_next_head_dribbled_is_cut_with_a_408(
    gateway: Gateway,
) -> None:
    async with idle_after_a_request(gateway) as (reader, writer):
        received = await dribbled_head(reader, writer)  # each byte stops the keep-alive timer
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


async def test_a_body_slower_than_the_header_timeout_is_read_whole(gateway: Gateway) -> None:
    reader, writer = await gateway.connect()
    try:
        writer.write(gateway.chat_head(len(CHAT)) + CHAT[:10])
        await gateway.header_deadline_passed()
        writer.write(CHAT[10:])
        status, _headers, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"]


async def test_a_body_that_stalls_gets_the_body_timeouts_408(gateway: Gateway) -> None:
    reader, writer = await gateway.connect()
    try:
        writer.write(gateway.chat_head(len(CHAT)) + CHAT[:10])
        status, headers, body = await read_response(reader)
    finally:
        writer.close()
    # The gateway's own answer (BODY_TIMEOUT_S after the head), not the server's plain one.
    assert status == 408 and headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"]["code"] == "request_timeout"


async def test_a_body_still_trickling_after_its_answer_is_cut_at_the_header_timeout(
    gateway: Gateway,
) -> None:
    reader, writer = await gateway.connect()
    bad_key = gateway.chat_head(100_000).replace(gateway.key.encode(), b"sk-unknown")
    try:
        writer.write(bad_key + CHAT)
        status, _headers, _body = await read_response(reader)  # refused on its headers
        sending = asyncio.create_task(dribble(writer, b" "))  # the rest of its body
        try:
            await until_closed(reader)
        finally:
            sending.cancel()
    finally:
        writer.close()
    assert status == 401


async def test_after_an_early_answer_the_idle_connection_waits_the_keep_alive_timeout(
    gateway: Gateway,
) -> None:
    # Refused on its headers, the request's body then comes whole and the connection idles, as
    # a pooled one does: its wait for the next request is the keep-alive timeout's, as for any
    # kept-alive connection, not the header timeout's, which closed it (and counted it).
    from trunkline.apps.serving import GATEWAY
    from trunkline.kit.header_timeout import closed_connections

    reader, writer = await gateway.connect()
    body = b" " * 200_000
    bad_key = gateway.chat_head(len(body)).replace(gateway.key.encode(), b"sk-unknown")
    try:
        writer.write(bad_key)
        status, _headers, _body = await read_response(reader)
        writer.write(body)
        await writer.drain()
        closed_before = closed_connections(GATEWAY)
        await gateway.header_deadline_passed()  # closes (and counts) a connection of its own
        closed = closed_connections(GATEWAY) - closed_before
        writer.write(gateway.head("GET", "/livez"))
        again, _headers, _body = await read_response(reader)
    finally:
        writer.close()
    assert (status, again) == (401, 200)
    assert closed == 1


async def test_a_kept_alive_connection_reset_by_its_client_leaves_no_timer_behind(
    gateway: Gateway,
) -> None:
    # uvicorn cancels its keep-alive timer on a clean close only: a reset one kept the timer,
    # and the connection's objects, for the whole keep-alive timeout (75 s by default).
    from trunkline.kit.header_timeout import HeaderTimeoutProtocol

    loop = asyncio.get_running_loop()
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.socket() as client:  # a plain socket: its close below sends the RST at once
        client.setblocking(False)
        await loop.sock_connect(client, (host, int(port)))
        await loop.sock_sendall(client, gateway.head("GET", "/livez"))
        async with asyncio.timeout(GENEROUS_S):
            while not (await loop.sock_recv(client, 65536)).endswith(b'{"status":"ok"}'):
                pass
        [server_side] = [
            o
            for o in gc.get_objects()
            if isinstance(o, HeaderTimeoutProtocol) and o.client == client.getsockname()
        ]
        assert server_side.timeout_keep_alive_task is not None  # idle, kept alive
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    async with asyncio.timeout(GENEROUS_S):
        while server_side in server_side.connections:  # noqa: ASYNC110 - polls uvicorn's set
            await asyncio.sleep(0.01)
    task = server_side.timeout_keep_alive_task
    assert task is None or task.cancelled()


async def test_a_stream_longer_than_the_header_timeout_is_not_cut(gateway: Gateway) -> None:
    body = json.dumps({**json.loads(CHAT), "stream": True}).encode()
    headers = {"Authorization": f"Bearer {gateway.key}"}
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=GENEROUS_S) as client,
        client.stream("POST", "/v1/chat/completions", content=body, headers=headers) as response,
    ):
        lines = response.aiter_lines()
        first = await anext(lines)
        await gateway.header_deadline_passed()
        gateway.release.set()
        rest = [line async for line in lines]
    assert response.status_code == 200 and first.startswith("data: {")
    events = [line for line in rest if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in events)


async def test_the_gateway_counts_the_connections_it_closed(gateway: Gateway) -> None:
    async def closed_so_far() -> float:
        async with httpx.AsyncClient(base_url=gateway.url) as client:  # closed before its idle
            text = (await client.get("/metrics")).text
        [family] = [
            f for f in text_string_to_metric_families(text) if f.name == "trunkline_header_timeouts"
        ]
        return family.samples[0].value

    before = await closed_so_far()
    await gateway.header_deadline_passed()
    assert await closed_so_far() == before + 1
