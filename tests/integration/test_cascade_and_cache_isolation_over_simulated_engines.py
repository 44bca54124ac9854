"""Tenant cache isolation and model cascading through the real gateway over HTTP, in front of
simulated vLLM engines on loopback ports."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests.unit.gateway.conftest import TENANT_A, TENANT_B, World, default_world, gateway_app
from tests.unit.gateway.engines_support import PoolsRefused

from support.gateway import serve_on_loopback, usage_records
from trunkline.engines import EngineSpec, SimulatedEngines, get_profile
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.quota.limits import Limits, QuotaBook
from trunkline.snapshot import AliasEntry, CascadeEntry, EndpointEntry, PoolEntry, TenantEntry
from unit.quota.conftest import QuotaWorld

PREAMBLE = "You are a helpful support agent for a telecom operator. " * 20
TENANT_C = "00000000-0000-0000-0000-00000000000c"
TENANT_D = "00000000-0000-0000-0000-00000000000d"
SMALL_CONTEXT = 1024
"""The small model's context window (the large one's is 131,072 tokens)."""
ALIASES = frozenset({"llama", "auto-truncation", "auto-refusal", "auto-logprob"})


@dataclass
class Live:
    base_url: str
    keys: dict[str, str]
    usage: InMemoryUsageStream

    async def records(self, count: int) -> list[UsageRecord]:
        return await usage_records(self.usage, count)

    async def chat(self, tenant: str, body: dict[str, object]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers) as client:
            return await client.post("/chat/completions", json=body)


def _world(urls: list[str]) -> World:
    world = default_world()
    pool = ("eu-west", False, 16)
    world.pools = {
        "h100-eu": PoolEntry("h100-eu", "llama-8b-served", "h100", *pool,
                             (EndpointEntry("e1", urls[0]),)),
        "small-eu": PoolEntry("small-eu", "small-served", "l40s", *pool,
                              (EndpointEntry("e2", urls[1]),)),
    }  # fmt: skip
    large = ("llama-8b-served", ("h100-eu",))
    world.aliases = {
        "llama": AliasEntry("llama", "llama-8b-served", "chat", ("h100-eu",)),
        "auto-truncation": AliasEntry(
            "auto-truncation", "small-served", "chat", ("small-eu",),
            CascadeEntry(*large, on_truncation=True, on_refusal=False),
        ),
        "auto-refusal": AliasEntry(
            "auto-refusal", "small-served", "chat", ("small-eu",),
            CascadeEntry(*large, on_truncation=False, on_refusal=True),
        ),
        "auto-logprob": AliasEntry(
            "auto-logprob", "small-served", "chat", ("small-eu",),
            CascadeEntry(*large, on_truncation=False, on_refusal=False, min_mean_logprob=-1.0),
        ),
    }  # fmt: skip
    salts = {TENANT_A: "salt-of-a", TENANT_B: "salt-of-b", TENANT_C: None, TENANT_D: None}
    world.tenants = {
        tid: TenantEntry(tid, f"t-{tid[-1]}", "gold", (), ALIASES, salt)
        for tid, salt in salts.items()
    }
    return world


@contextlib.asynccontextmanager
async def _serving(quotas: QuotaBook | None = None, **app_options: Any) -> AsyncIterator[Live]:
    """The gateway over the two simulated engines, with ``quotas``; ``app_options`` go to its
    app."""
    specs = [
        EngineSpec("llama-8b-served", "h100", time_scale=0.2),
        EngineSpec(
            "small-served",
            dataclasses.replace(get_profile("l40s"), max_model_len=SMALL_CONTEXT),
            time_scale=0.2,
        ),
    ]
    async with SimulatedEngines(specs) as engines:
        world = _world(engines.urls)
        if quotas is not None:
            world = QuotaWorld(
                world.store, world.tiers, world.tenants, world.keys, world.aliases, world.pools,
                quotas,
            )  # fmt: skip
        keys = {tid: world.add_key(tid) for tid in world.tenants}
        world.publish()
        usage = InMemoryUsageStream()
        app = gateway_app(world, usage, **app_options)
        async with serve_on_loopback(app) as url:
            yield Live(f"{url}/v1", keys, usage)


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    async with _serving() as served:
        yield served


def _chat(model: str, content: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _cached(live: Live, tenant: str, question: str) -> int:
    response = await live.chat(tenant, _chat("llama", PREAMBLE + question, max_tokens=4))
    assert response.status_code == 200, response.text
    return int(response.json()["usage"]["prompt_tokens_details"]["cached_tokens"])


async def test_isolated_tenants_never_hit_each_others_cached_prompts(live: Live) -> None:
    assert await _cached(live, TENANT_A, "question one") == 0
    assert await _cached(live, TENANT_B, "question two") == 0, "B reused A's cached preamble"
    assert await _cached(live, TENANT_A, "question three") >= 16 * 10  # A reuses its own


async def test_tenants_that_opt_out_share_the_prefix_cache(live: Live) -> None:
    assert await _cached(live, TENANT_A, "question one") == 0
    assert await _cached(live, TENANT_C, "question two") == 0, "C reused A's salted preamble"
    assert await _cached(live, TENANT_D, "question three") >= 16 * 10  # shared with C


async def test_an_answer_cut_by_the_small_context_escalates_and_both_attempts_are_metered(
    live: Live,
) -> None:
    """The prompt leaves the small model less room than the client's max_tokens: its engine
    stops short of that limit, and the large model, with a longer context, does not."""
    question = _chat("auto-truncation", PREAMBLE * 2 + "Explain 5G slicing.", max_tokens=500)
    response = await live.chat(TENANT_A, question)

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == "truncation"
    assert response.json()["model"] == "llama-8b-served"
    records = sorted(await live.records(2), key=lambda r: r.request_id)
    request_id = response.headers["x-request-id"]
    assert [(r.request_id, r.model, r.pool, r.status) for r in records] == [
        (request_id, "small-served", "small-eu", 200),
        (f"{request_id}.escalated", "llama-8b-served", "h100-eu", 200),
    ]
    small, large = records
    assert small.prompt_tokens + small.completion_tokens == SMALL_CONTEXT
    assert small.completion_tokens < 500 and large.completion_tokens == 500


async def test_an_answer_cut_at_the_clients_own_max_tokens_is_kept(live: Live) -> None:
    """The large model would stop at the same 8 tokens: the small answer is the client's,
    metered once."""
    question = _chat("auto-truncation", "Explain 5G slicing.", max_tokens=8)
    response = await live.chat(TENANT_A, question)

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "first"
    assert response.json()["choices"][0]["finish_reason"] == "length"
    [record] = await live.records(1)
    assert (record.model, record.completion_tokens) == ("small-served", 8)


async def test_a_kept_small_answer_streams_back_without_escalation(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.keys[TENANT_A]}"}
    body = _chat("auto-refusal", "Say hello.", max_tokens=8, stream=True,
                 stream_options={"include_usage": True})  # fmt: skip
    async with (
        httpx.AsyncClient(base_url=live.base_url, headers=headers) as client,
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        text = "".join([part async for part in response.aiter_text()])

    assert response.status_code == 200
    assert response.headers["x-trunkline-cascade"] == "first"
    assert '"model":"small-served"' in text and text.rstrip().endswith("data: [DONE]")
    [record] = await live.records(1)
    assert (record.model, record.completion_tokens, record.status) == ("small-served", 8, 200)


async def test_a_logprob_check_keeps_sure_answers_and_escalates_unsure_ones(live: Live) -> None:
    questions = [f"Why does my router blink, case {n}?" for n in range(12)]

    async def judged(question: str) -> tuple[str, str | None, object]:
        response = await live.chat(TENANT_A, _chat("auto-logprob", question, max_tokens=8))
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return (
            response.headers["x-trunkline-cascade"],
            response.headers.get("x-trunkline-cascade-reason"),
            choice["logprobs"],
        )

    first = [await judged(q) for q in questions]

    # The simulated small model is sure of some answers and not of others (as a real one is):
    # the check keeps the first, escalates the rest, and judges a question alike every time.
    outcomes = {(cascade, reason) for cascade, reason, _ in first}
    assert outcomes == {("first", None), ("escalated", "low_logprob")}
    assert [await judged(q) for q in questions] == first
    # The gateway asked for the logprobs; the client did not, and gets none.
    assert all(logprobs is None for _, _, logprobs in first)
    # Every small attempt is metered, and so is every escalation.
    escalations = 2 * sum(cascade == "escalated" for cascade, _, _ in first)
    records = await live.records(2 * len(questions) + escalations)
    assert sorted(r.model for r in records) == sorted(
        ["small-served"] * 2 * len(questions) + ["llama-8b-served"] * escalations
    )


async def test_a_small_pool_admission_refuses_escalates_to_the_large_one() -> None:
    """The small pool cannot start the request within the gold tier's TTFT target: the large
    model answers it, and only that attempt, the one sent, is metered."""
    refused = PoolsRefused("small-eu")
    async with _serving(admission=lambda _engines: refused) as live:
        response = await live.chat(TENANT_A, _chat("auto-refusal", "Say hello.", max_tokens=8))

        assert response.status_code == 200, response.text
        assert response.headers["x-trunkline-cascade"] == "escalated"
        assert response.headers["x-trunkline-cascade-reason"] == "first_not_admitted"
        assert response.json()["model"] == "llama-8b-served"
        [record] = await live.records(1)
        assert (record.request_id, record.model, record.status) == (
            f"{response.headers['x-request-id']}.escalated", "llama-8b-served", 200,
        )  # fmt: skip


async def test_an_escalation_refused_by_quota_answers_with_the_small_answer() -> None:
    """The small answer, cut by its context, used most of the tenant's monthly tokens (2,000:
    its prompt and 500 tokens were reserved, 1,024 used): the escalation's reservation does not
    fit, and the client gets the small answer it paid for rather than a 429."""
    budget = QuotaBook(tenants={TENANT_A: Limits(tokens_per_month=2_000)})
    async with _serving(budget) as live:
        question = _chat("auto-truncation", PREAMBLE * 2 + "Explain 5G slicing.", max_tokens=500)
        response = await live.chat(TENANT_A, question)

        assert response.status_code == 200, response.text
        assert response.headers["x-trunkline-cascade"] == "first"
        assert response.headers["x-trunkline-cascade-reason"] == "escalation_refused"
        assert "retry-after" not in response.headers
        answer = response.json()
        assert (answer["model"], answer["choices"][0]["finish_reason"]) == (
            "small-served", "length",
        )  # fmt: skip
        [record] = await live.records(1)
        assert (record.request_id, record.model, record.status) == (
            response.headers["x-request-id"], "small-served", 200,
        )  # fmt: skip
        assert record.prompt_tokens + record.completion_tokens == SMALL_CONTEXT
