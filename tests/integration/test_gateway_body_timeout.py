"""The gateway's request-body timeout over a real socket under uvicorn: a late body's 408 closes
the connection (the rest of the body is not read); a client leaving before its body is whole is
counted as having left (499), and nothing of it is metered."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.conftest import default_world, gateway_app
from tests.unit.gateway.upstreams import chat_any

from support.gateway import serve_on_loopback
from support.raw_http import GENEROUS_S, connect, read_response, until_closed
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings

BODY_TIMEOUT_S = 1.0
SLOW_S = 3 * GENEROUS_S
"""The header and keep-alive timeouts: longer than a test waits for the connection to close."""
CHAT = json.dumps({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}).encode()


@dataclass
class Gateway:
    url: str
    key: str
    usage: InMemoryUsageStream

    def chat_head(self, length: int) -> bytes:
        lines = [
            "POST /v1/chat/completions HTTP/1.1",
            "host: gateway",
            f"authorization: Bearer {self.key}",
            "content-type: application/json",
            f"content-length: {length}",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def requests_counted(self) -> dict[tuple[str, str], float]:
        async with httpx.AsyncClient(base_url=self.url) as client:
            page = (await client.get("/metrics")).text
        return {
            (sample.labels["route"], sample.labels["status"]): sample.value
            for family in text_string_to_metric_families(page)
            for sample in family.samples
            if sample.name == "trunkline_requests_total"
        }


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    world = default_world()
    key = world.add_key()
    world.publish()
    usage = InMemoryUsageStream()
    settings = GatewaySettings(
        snapshot_poll_s=0.05,
        header_timeout_s=SLOW_S,
        keep_alive_timeout_s=SLOW_S,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    app = gateway_app(world, usage, settings, transport=httpx.MockTransport(chat_any))
    async with serve_on_loopback(app, header_timeout_s=SLOW_S, keep_alive_timeout_s=SLOW_S) as url:
        yield Gateway(url, key, usage)


async def test_a_late_bodys_408_closes_the_connection(gateway: Gateway) -> None:
    """RFC 9110: the rest of the body is not read. Kept open, the connection read the client's
    trickle as long as it liked (up to the header timeout of a next head that never comes)."""
    reader, writer = await connect(gateway.url)

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in CHAT[10:]:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(BODY_TIMEOUT_S / 4)

    writer.write(gateway.chat_head(len(CHAT)) + CHAT[:10])
    sending = asyncio.create_task(trickle())
    try:
        status, headers, body = await read_response(reader)
        rest = await until_closed(reader)
    finally:
        sending.cancel()
        writer.close()
    assert status == 408 and rest == b""
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "request_timeout"  # OpenAI's error shape


async def test_a_client_leaving_mid_body_is_counted_499_and_not_metered(gateway: Gateway) -> None:
    left = ("/v1/chat/completions", "499")
    before = await gateway.requests_counted()
    _reader, writer = await connect(gateway.url)
    writer.write(gateway.chat_head(len(CHAT)) + CHAT[:10])
    await writer.drain()
    writer.close()
    async with asyncio.timeout(GENEROUS_S):  # until the gateway has seen it go
        while (await gateway.requests_counted()).get(left, 0) == before.get(left, 0):  # noqa: ASYNC110 - polls /metrics
            await asyncio.sleep(0.02)
    counted = await gateway.requests_counted()
    assert {k: v - before.get(k, 0) for k, v in counted.items() if v != before.get(k, 0)} == {
        left: 1
    }  # not a 400: the request was not bad, its client left
    assert gateway.usage.read(100) == []  # no body, no engine: nothing to charge
