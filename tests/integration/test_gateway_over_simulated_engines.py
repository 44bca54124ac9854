"""The gateway over real HTTP in front of simulated vLLM engines on loopback ports."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from tests.unit.gateway.conftest import World, default_world, gateway_app

from support.gateway import serve_on_loopback, usage_records
from trunkline.engines import EngineSpec, SimulatedEngines
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.snapshot import AliasEntry, EndpointEntry, PoolEntry

PREAMBLE = "You are a helpful support agent for a telecom operator. " * 20


@dataclass
class Live:
    base_url: str
    key: str
    usage: InMemoryUsageStream
    engines: SimulatedEngines

    async def records(self, count: int) -> list[UsageRecord]:
        return await usage_records(self.usage, count)


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    specs = [EngineSpec("llama-8b-served", "h100", time_scale=0.2)]
    async with SimulatedEngines(specs) as engines:
        world: World = default_world()
        world.pools = {
            "h100-eu": PoolEntry(
                "h100-eu",
                "llama-8b-served",
                "h100",
                "eu-west",
                False,
                16,
                (EndpointEntry("e1", engines.urls[0]),),
            )
        }
        world.aliases = {"llama": AliasEntry("llama", "llama-8b-served", "chat", ("h100-eu",))}
        key = world.add_key()
        world.publish()
        usage = InMemoryUsageStream()
        app = gateway_app(world, usage)
        async with serve_on_loopback(app) as url:
            yield Live(f"{url}/v1", key, usage, engines)


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "llama", "messages": [{"role": "user", "content": content}], **extra}


async def test_repeated_preamble_reports_cached_tokens_through_the_gateway(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    async with httpx.AsyncClient(base_url=live.base_url, headers=headers) as client:
        first = await client.post("/chat/completions", json=_chat(PREAMBLE + "question one"))
        second = await client.post("/chat/completions", json=_chat(PREAMBLE + "question two"))
    assert first.status_code == second.status_code == 200
    assert first.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 16 * 10  # the shared preamble spans many full blocks
    records = await live.records(2)
    assert sorted(r.cached_tokens for r in records) == [0, cached]


async def test_n_answers_are_metered_whole_plain_and_streamed(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    plain = _chat("name three colours", n=3, max_tokens=5)
    streamed = {**plain, "stream": True, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=live.base_url, headers=headers) as client:
        answer = await client.post("/chat/completions", json=plain)
        chunks = []
        async with client.stream("POST", "/chat/completions", json=streamed) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    chunks.append(json.loads(line[len("data: ") :]))
    assert answer.status_code == 200, answer.text
    assert [c["index"] for c in answer.json()["choices"]] == [0, 1, 2]
    assert answer.json()["usage"]["completion_tokens"] == 15
    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1, 2}
    assert chunks[-1]["usage"]["completion_tokens"] == 15
    records = await live.records(2)
    assert [r.completion_tokens for r in records] == [15, 15]
    assert len({r.prompt_tokens for r in records}) == 1, "the prompt is counted once, not n times"


async def test_client_hanging_up_mid_stream_is_metered_and_frees_the_engine(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    body = _chat("tell me a long story", stream=True, max_tokens=500)
    async with (
        httpx.AsyncClient(base_url=live.base_url, headers=headers) as client,
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        async for _chunk in response.aiter_bytes():
            break  # hang up after the first bytes
    [record] = await live.records(1)
    assert record.status == 499 and record.error_code == "client_closed"
    assert record.completion_tokens < 500
    # No usage chunk came, but the engine prefilled the prompt: the gateway's estimate is kept.
    assert record.prompt_tokens > 0
    core = live.engines.apps[0].core
    deadline = time.monotonic() + 10
    while core.num_requests_running and time.monotonic() < deadline:  # noqa: ASYNC110 - polls an engine
        await asyncio.sleep(0.02)
    assert core.num_requests_running == 0, "the engine kept generating for a client that left"


async def test_client_hanging_up_before_a_plain_answer_is_metered_and_frees_the_engine(
    live: Live,
) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    body = _chat("tell me a long story", max_tokens=3000, ignore_eos=True)
    core = live.engines.apps[0].core
    async with httpx.AsyncClient(base_url=live.base_url, headers=headers) as client:
        request = asyncio.ensure_future(client.post("/chat/completions", json=body))
        deadline = time.monotonic() + 10
        while not core.num_requests_running and time.monotonic() < deadline:  # noqa: ASYNC110 - polls an engine
            await asyncio.sleep(0.01)
        assert core.num_requests_running == 1, "the request never reached the engine"
        request.cancel()  # hang up while the engine generates
        with pytest.raises(asyncio.CancelledError):
            await request
    [record] = await live.records(1)
    assert (record.status, record.error_code) == (499, "client_closed")
    assert record.completion_tokens == 0  # it got nothing, and is billed nothing of the answer
    # The engine worked on it: the record names it and keeps the prompt it prefilled.
    assert record.endpoint == live.engines.urls[0] and record.prompt_tokens > 0
    deadline = time.monotonic() + 10
    while core.num_requests_running and time.monotonic() < deadline:  # noqa: ASYNC110 - polls an engine
        await asyncio.sleep(0.02)
    assert core.num_requests_running == 0, "the engine kept generating for a client that left"


def _placed_pools(long_url: str, short_url: str) -> dict[str, PoolEntry]:
    """A pool for prompts of 256 tokens or more, and one for the rest."""
    return {
        name: PoolEntry(
            name,
            "llama-8b-served",
            "h100",
            "eu-west",
            False,
            16,
            (EndpointEntry(f"e-{name}-{url}", url),),
            min_prompt_tokens=low,
            max_prompt_tokens=high,
        )
        for name, url, low, high in (("long", long_url, 256, None), ("short", short_url, 0, 256))
    }


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port  # nothing listens there any more: connections are refused


@pytest.mark.parametrize("long_pool_alive", [True, False])
async def test_long_prompts_go_to_the_pool_placed_for_them_or_fail_over_to_the_rest(
    long_pool_alive: bool,
) -> None:
    specs = [EngineSpec("llama-8b-served", "h100", time_scale=0.2) for _ in range(2)]
    async with SimulatedEngines(specs) as engines:
        world: World = default_world()
        long_url = engines.urls[0] if long_pool_alive else f"http://127.0.0.1:{_closed_port()}"
        world.pools = _placed_pools(long_url, engines.urls[1])
        world.aliases = {"llama": AliasEntry("llama", "llama-8b-served", "chat", ("long", "short"))}
        key = world.add_key()
        world.publish()
        usage = InMemoryUsageStream()
        async with serve_on_loopback(gateway_app(world, usage)) as url:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=f"{url}/v1", headers=headers) as client:
                ids = []
                for content in (PREAMBLE + "a long one", "hi", PREAMBLE + "another", "hello"):
                    answer = await client.post("/chat/completions", json=_chat(content))
                    assert answer.status_code == 200  # a dead long pool: failed over, no error
                    ids.append(answer.headers["x-request-id"])
            pools = {r.request_id: r.pool for r in await usage_records(usage, len(ids))}
        long_pool = "long" if long_pool_alive else "short"
        assert [pools.get(request_id) for request_id in ids] == [
            long_pool,
            "short",
            long_pool,
            "short",
        ]
