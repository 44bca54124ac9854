"""The gateway's connections to an engine are not reused once idle for longer than
``upstream_keep_alive_s``, which sits under vLLM's own idle timeout (5 s): reused past it, the
engine may close a connection just as the gateway sends a request on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.unit.gateway.conftest import SECRET, default_world

from support.gateway import serve_on_loopback
from support.traffic import UpstreamLog
from trunkline.apps.gateway import create_gateway_app
from trunkline.engines import create_sim_app, get_profile
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings
from trunkline.snapshot import AliasEntry, EndpointEntry, PoolEntry

MODEL = "llama-8b-served"
KEEP_S = 0.3
BODY = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@dataclass
class Connections:
    """The client port of each chat completion the engine received: one port, one connection."""

    app: Any
    ports: list[int] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            self.ports.append(scope["client"][1])
        await self.app(scope, receive, send)


@dataclass
class Live:
    url: str
    key: str
    engine: Connections

    async def chat(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        response = await client.post(f"{self.url}/v1/chat/completions", json=BODY, headers=headers)
        assert response.status_code == 200, response.text


@pytest.fixture(params=["own", "watched"])
async def live(request: pytest.FixtureRequest) -> AsyncIterator[Live]:
    """A gateway with its own connection pool, or with a transport watching its requests (as
    the real-vLLM failover test's, ``UpstreamLog``: httpx applies the setting to the transport
    it makes, not to one it is given)."""
    engine = Connections(create_sim_app(model=MODEL, profile=get_profile("h100"), time_scale=0.05))
    async with serve_on_loopback(engine) as engine_url:
        world = default_world()
        endpoint = EndpointEntry("e1", engine_url)
        pool = PoolEntry("h100-eu", MODEL, "h100", "eu-west", False, 16, (endpoint,))
        world.pools = {"h100-eu": pool}
        world.aliases = {"llama": AliasEntry("llama", MODEL, "chat", ("h100-eu",))}
        key = world.add_key()
        world.publish()
        settings = GatewaySettings(snapshot_poll_s=0.05, upstream_keep_alive_s=KEEP_S)
        watched = UpstreamLog(settings) if request.param == "watched" else None
        app = create_gateway_app(
            source=world.store, emitter=InMemoryUsageStream(), server_secret=SECRET,
            settings=settings, transport=watched,
        )  # fmt: skip
        async with serve_on_loopback(app) as url:
            yield Live(url, key, engine)


async def test_a_connection_idle_past_the_setting_is_not_reused(live: Live) -> None:
    async with httpx.AsyncClient() as client:
        await live.chat(client)
        await live.chat(client)  # at once: the same connection
        await asyncio.sleep(KEEP_S * 2)  # the idle time under test, not a wait for a race
        await live.chat(client)
    first, again, after_idle = live.engine.ports
    assert again == first, "a connection kept alive is reused while fresh"
    assert after_idle != first, "a connection idle past upstream_keep_alive_s was reused"
