"""Simulated engines as real loopback HTTP servers, from async code and from sync fixtures."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.unit.engines.helpers import sse_payloads

from trunkline.engines import EngineSpec, SimulatedEngines, start_in_thread

CHAT = {"messages": [{"role": "user", "content": "Explain BGP route flaps."}]}


async def test_each_engine_serves_its_model_on_its_own_port() -> None:
    specs = [EngineSpec("llama", "h100", time_scale=0), EngineSpec("qwen", "xeon", time_scale=0)]
    async with SimulatedEngines(specs) as engines, httpx.AsyncClient() as client:
        assert len(set(engines.urls)) == 2
        assert all(url.startswith("http://127.0.0.1:") for url in engines.urls)
        served = [
            (await client.get(f"{url}/v1/models")).json()["data"][0]["id"] for url in engines.urls
        ]
        assert served == ["llama", "qwen"]
        response = await client.post(
            f"{engines.urls[1]}/v1/chat/completions",
            json={"model": "qwen", "max_tokens": 4, "stream": True, **CHAT},
        )
        assert sse_payloads(response.text)[-1] == "[DONE]"
        urls = engines.urls
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{urls[0]}/health")


async def test_a_client_that_disconnects_mid_stream_aborts_its_request() -> None:
    # 2000 tokens at real speed would take ~13 s: only an abort ends the request early.
    async with SimulatedEngines([EngineSpec("llama", "h100", time_scale=1.0)]) as engines:
        core = engines.apps[0].core
        async with httpx.AsyncClient() as client, asyncio.timeout(10):
            body = {"model": "llama", "max_tokens": 2000, "stream": True, **CHAT}
            async with client.stream(
                "POST", f"{engines.urls[0]}/v1/chat/completions", json=body
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        break
                assert core.num_requests_running == 1
            await engines.apps[0].engine.wait_for(lambda c: not c.has_unfinished_requests())
        assert core.counters.finished == {"stop": 0, "length": 0, "abort": 1}
        assert core.kv_cache_usage == 0.0


def test_engines_started_in_a_thread_serve_sync_callers() -> None:
    handle = start_in_thread([EngineSpec("llama", "a100", seed=1, time_scale=0)])
    try:
        [url] = handle.urls
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "llama", "max_tokens": 3, **CHAT}
        )
        assert response.status_code == 200
        assert response.json()["usage"]["completion_tokens"] == 3
    finally:
        handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")
