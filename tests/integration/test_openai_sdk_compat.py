"""What the README promises: the official OpenAI Python SDK, sync and async, works against a
tenant's gateway endpoint as against OpenAI. The gateway over real HTTP in front of simulated
vLLM engines on loopback ports; each test is something an application developer does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from tests.unit.gateway.conftest import TENANT_A, default_world, gateway_app
from tests.unit.quota.conftest import QuotaWorld

from support.gateway import serve_on_loopback, usage_records
from trunkline.engines import EngineSpec, SimulatedEngines
from trunkline.gateway.service import GatewayService
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.quota.limits import Limits, QuotaBook
from trunkline.snapshot import AliasEntry, EndpointEntry, PoolEntry

HELLO = [{"role": "user", "content": "hello there"}]
STORY = [{"role": "user", "content": "tell me a long story"}]
CONCURRENCY = 2  # in a quota store's counters (``quota.limits.LIMIT_NAMES``)


@dataclass
class Live:
    base_url: str
    key: str
    narrow_key: str
    """May call only the embedding model."""
    usage: InMemoryUsageStream
    engines: SimulatedEngines
    service: GatewayService

    def sync(self, key: str | None = None, **options: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key or self.key, **options)  # type: ignore[arg-type]

    def async_(self, **options: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.key, **options)  # type: ignore[arg-type]

    async def records(self, count: int) -> list[UsageRecord]:
        return await usage_records(self.usage, count)

    async def in_flight(self) -> int:
        """The key's concurrency slots held, once every settlement queued has run."""
        await self.service.quota.drain()
        key_id = self.key.split("_")[1]
        [used] = await self.service.quota.store.usage(
            TENANT_A, [("key", key_id)], int(time.time() * 1000)
        )
        return used[CONCURRENCY]


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    specs = [EngineSpec("llama-8b-served", "h100", time_scale=0.2), EngineSpec("bge-served")]
    async with SimulatedEngines(specs) as engines:
        base = default_world()
        world = QuotaWorld(base.store, base.tiers, base.tenants, base.keys, {}, {})
        world.pools = {
            "h100-eu": PoolEntry(
                "h100-eu", "llama-8b-served", "h100", "eu-west", False, 16,
                (EndpointEntry("e1", engines.urls[0]),),
            ),
            "embed": PoolEntry(
                "embed", "bge-served", "l40s", "eu-west", False, 16,
                (EndpointEntry("e2", engines.urls[1]),),
            ),
        }  # fmt: skip
        world.aliases = {
            "llama": AliasEntry("llama", "llama-8b-served", "chat", ("h100-eu",)),
            "bge": AliasEntry("bge", "bge-served", "embedding", ("embed",)),
        }
        key = world.add_key()
        narrow = world.add_key(allowed=frozenset({"bge"}))
        world.quotas = QuotaBook(keys={key.split("_")[1]: Limits(concurrent_requests=4)})
        world.publish()
        usage = InMemoryUsageStream()
        app = gateway_app(world, usage)
        async with serve_on_loopback(app) as url:
            yield Live(f"{url}/v1", key, narrow, usage, engines, app.state.gateway)


async def test_models_are_listed_and_retrieved_and_an_unknown_one_is_not_found(live: Live) -> None:
    await asyncio.to_thread(_models_are_listed_and_retrieved_and_an_unknown_one_is_not_found, live)


def _models_are_listed_and_retrieved_and_an_unknown_one_is_not_found(live: Live) -> None:
    client = live.sync(max_retries=0)
    assert [m.id for m in client.models.list()] == ["bge", "llama"]
    assert client.models.retrieve("llama").id == "llama"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-9")
    assert raised.value.code == "model_not_found"
    assert [m.id for m in live.sync(live.narrow_key).models.list()] == ["bge"]


async def test_chat_plain_and_streamed_with_usage_n_and_logprobs(live: Live) -> None:
    plain = await asyncio.to_thread(_chat_plain_and_streamed, live)
    records = await live.records(2)
    assert [r.completion_tokens for r in records] == [8, 8]
    assert [r.prompt_tokens for r in records] == [plain.usage.prompt_tokens] * 2  # type: ignore[union-attr]


def _chat_plain_and_streamed(live: Live) -> ChatCompletion:
    """The sync client (in a thread: the gateway serves on the test's event loop)."""
    client = live.sync(max_retries=0)
    options = {"n": 2, "logprobs": True, "top_logprobs": 2, "seed": 7, "user": "u-1"}
    plain = client.chat.completions.create(
        model="llama",
        messages=HELLO,
        max_completion_tokens=4,
        stop=["\n\n"],
        **options,  # type: ignore[arg-type]
    )
    assert [c.index for c in plain.choices] == [0, 1]
    assert all(c.logprobs and len(c.logprobs.content[0].top_logprobs) == 2 for c in plain.choices)  # type: ignore[index]
    assert plain.usage is not None and plain.usage.completion_tokens == 8
    chunks = list(
        client.chat.completions.create(
            model="llama", messages=HELLO, max_tokens=4, stream=True,
            stream_options={"include_usage": True}, **options,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    *answer, last = chunks
    assert {c.choices[0].index for c in answer if c.choices} == {0, 1}
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 8
    assert all(c.usage is None for c in answer)
    return plain


async def test_tools_and_response_format_reach_the_engine(live: Live) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    answer = await live.async_(max_retries=0).chat.completions.create(
        model="llama", messages=HELLO, max_tokens=3, tools=[tool], tool_choice="auto",  # type: ignore[list-item]
        response_format={"type": "json_object"}, extra_body={"top_k": 5},
    )  # fmt: skip
    assert answer.choices[0].message.content
    assert answer.model == "llama-8b-served"


async def test_completions_and_embeddings_of_every_input_shape(live: Live) -> None:
    await asyncio.to_thread(_completions_and_embeddings_of_every_input_shape, live)


def _completions_and_embeddings_of_every_input_shape(live: Live) -> None:
    client = live.sync(max_retries=0)
    texts = client.completions.create(model="llama", prompt=["one", "two"], max_tokens=2)
    assert [c.index for c in texts.choices] == [0, 1]
    streamed = list(
        client.completions.create(
            model="llama", prompt=[1, 2, 3], max_tokens=3, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert streamed[-1].usage is not None and streamed[-1].usage.prompt_tokens == 3
    floats = client.embeddings.create(model="bge", input="hello", encoding_format="float")
    decoded = client.embeddings.create(model="bge", input="hello")  # the SDK asks for base64
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)
    many = client.embeddings.create(model="bge", input=["a", "b", "c"])
    assert [d.index for d in many.data] == [0, 1, 2]
    tokens = client.embeddings.create(model="bge", input=[[1, 2, 3], [4, 5]])
    assert tokens.usage.prompt_tokens == 5


async def test_each_refusal_raises_the_sdk_exception_of_its_status(live: Live) -> None:
    await asyncio.to_thread(_each_refusal_raises_the_sdk_exception_of_its_status, live)


def _each_refusal_raises_the_sdk_exception_of_its_status(live: Live) -> None:
    client = live.sync(max_retries=0)
    cases: list[tuple[type[openai.APIStatusError], str, object]] = [
        (openai.AuthenticationError, "invalid_api_key",
         lambda: live.sync("tlk_not_a_key", max_retries=0).models.list()),
        (openai.PermissionDeniedError, "model_not_allowed",
         lambda: live.sync(live.narrow_key, max_retries=0).chat.completions.create(
             model="llama", messages=HELLO)),
        (openai.NotFoundError, "model_not_found",
         lambda: client.chat.completions.create(model="gpt-9", messages=HELLO)),
        (openai.BadRequestError, "invalid_value",
         lambda: client.chat.completions.create(model="llama", messages=HELLO, n=0)),
        (openai.BadRequestError, "model_not_supported",
         lambda: client.embeddings.create(model="llama", input="hi")),
    ]  # fmt: skip
    for exception, code, call in cases:
        with pytest.raises(exception) as raised:
            call()  # type: ignore[operator]
        error = raised.value
        assert error.code == code
        assert isinstance(error.body, dict) and error.body["code"] == code
        assert error.body["message"] and error.message.endswith(error.body["message"])
        assert error.type == "invalid_request_error"
        assert error.request_id and error.request_id.startswith("req-")


async def test_raw_responses_carry_the_request_id_and_rate_limit_headers(live: Live) -> None:
    await asyncio.to_thread(_raw_responses_carry_the_request_id_and_rate_limit_headers, live)


def _raw_responses_carry_the_request_id_and_rate_limit_headers(live: Live) -> None:
    raw = live.sync(max_retries=0).chat.completions.with_raw_response.create(
        model="llama",
        messages=HELLO,
        max_tokens=2,  # type: ignore[arg-type]
    )
    answer = raw.parse()
    assert answer._request_id == raw.headers["x-request-id"]
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert raw.headers["x-trunkline-pool"] == "h100-eu"


async def test_a_stream_the_client_leaves_is_metered_once_and_frees_its_slot(live: Live) -> None:
    client = live.async_(max_retries=0)
    stream = await client.chat.completions.create(
        model="llama",
        messages=STORY,
        max_tokens=2000,
        stream=True,  # type: ignore[arg-type]
    )
    received = 0
    async for _chunk in stream:
        received += 1
        if received == 5:
            break
    await stream.close()
    [record] = await live.records(1)
    assert (record.status, record.error_code) == (499, "client_closed")
    assert 4 <= record.completion_tokens < 2000
    assert await live.in_flight() == 0


async def test_a_client_timeout_is_metered_once_and_frees_its_slot(live: Live) -> None:
    client = live.async_(max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model="llama", messages=STORY, max_tokens=5000)  # type: ignore[arg-type]
    [record] = await live.records(1)
    assert (record.status, record.error_code) == (499, "client_closed")
    assert await live.in_flight() == 0


async def test_the_sdk_waits_out_a_full_concurrency_limit_and_is_charged_once(live: Live) -> None:
    """The 429's ``retry-after`` is what the SDK waits before its retry; the refusal itself
    holds no slot, counts no tokens and is not metered."""
    holding = live.async_(max_retries=0)
    streams = [
        await holding.chat.completions.create(
            model="llama",
            messages=STORY,
            max_tokens=2000,
            stream=True,  # type: ignore[arg-type]
        )
        for _ in range(4)  # the key's concurrent_requests
    ]
    statuses: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code == 429:  # the streams end while the SDK waits to retry
            assert response.headers["retry-after"] == "1"
            for stream in streams:
                await stream.close()

    hooked = httpx.AsyncClient(event_hooks={"response": [on_response]})
    client = live.async_(max_retries=1, http_client=hooked)
    answer = await client.chat.completions.create(model="llama", messages=HELLO, max_tokens=2)  # type: ignore[arg-type]

    assert statuses == [429, 200]
    assert answer.usage is not None
    records = await live.records(5)
    assert sorted(r.status for r in records) == [200, 499, 499, 499, 499]
    assert await live.in_flight() == 0
