"""Quotas as an OpenAI client meets them at the gateway: each request settled once to what it
used, however it ended; leases of requests in flight renewed; what the quota store is asked
(and when it is not), and the metrics of its decisions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import httpx
from tests.unit.gateway.engines_support import UNHURRIED_S
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway.prompt_tokens import PromptTokens
from trunkline.gateway.routing.vllm_hashes import VllmHashing
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.quota.limits import (
    CONCURRENCY,
    DAY_TOKENS,
    REQUESTS,
    Limits,
)
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.store import Outcome, ReserveRequest
from unit.quota.conftest import Gateway
from unit.quota.test_quota_gateway import CHAT, USED, open_stream


def test_settle_charges_what_the_engine_reported(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(tokens_per_day=10_000))
    assert gw.post(CHAT).status_code == 200
    assert gw.post({**CHAT, "stream": True}).status_code == 200
    assert gw.counters() == (2, 2 * USED, 0, 2 * USED, 2 * USED, 0)


def test_a_client_hanging_up_mid_stream_pays_only_what_it_got(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(concurrent_requests=1))
    events = gw.call(open_stream, gw)
    assert gw.counters()[CONCURRENCY] == 1
    assert gw.post(CHAT).status_code == 429, "the only slot is taken"

    gw.call(events.aclose)  # what the server does when the client goes away
    gw.call(gw.service.quota.drain)

    # no usage chunk arrived: the prompt estimate plus the chunks streamed so far
    assert gw.counters()[CONCURRENCY] == 0
    assert gw.counters()[DAY_TOKENS] == 18 + 0
    assert gw.post(CHAT).status_code == 200


def test_reusing_a_request_id_does_not_share_a_concurrency_slot(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(concurrent_requests=1))
    events = gw.call(open_stream, gw, "same-id")
    response = gw.client.post(
        "/v1/chat/completions", json=CHAT, headers={**gw.auth, "x-request-id": "same-id"}
    )
    assert response.status_code == 429
    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    assert gw.counters()[CONCURRENCY] == 0


def test_an_engine_dying_mid_stream_charges_what_was_streamed(make_gateway: Any) -> None:
    def dies(request: httpx.Request) -> httpx.Response:
        events = sse_events("llama-8b-served", True)
        stream = Chunks(events, fail_after=3)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    gw: Gateway = make_gateway(dies)
    gw.limit(key=Limits(tokens_per_day=10_000, concurrent_requests=1))
    response = gw.post({**CHAT, "stream": True})
    assert "upstream_error" in response.text
    assert gw.counters() == (1, 18 + 2, 0, 18 + 2, 18 + 2, 0)


def test_a_completions_stream_cut_short_charges_every_text_chunk(make_gateway: Any) -> None:
    """A completions stream has no role chunk: each chunk before the cut is a token."""

    def text(piece: str) -> bytes:
        choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}
        data = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def dies(request: httpx.Request) -> httpx.Response:
        stream = Chunks([text("a"), text(" b"), text(" c"), text(" d")], fail_after=3)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    gw: Gateway = make_gateway(dies)
    gw.limit(key=Limits(tokens_per_day=10_000))
    body = {"model": "llama", "prompt": "hello", "max_tokens": 20, "stream": True}
    response = gw.post(body, path="/v1/completions")

    assert "upstream_error" in response.text
    prompt = estimate_prompt_tokens("completions", body)
    assert gw.counters()[DAY_TOKENS] == prompt + 3


def test_a_request_no_engine_took_is_charged_nothing(make_gateway: Any) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    gw: Gateway = make_gateway(down)
    gw.limit(key=Limits(requests_per_minute=5, tokens_per_minute=1000, concurrent_requests=1))
    response = gw.post(CHAT)
    assert response.status_code == 503
    assert response.headers["x-ratelimit-remaining-requests"] == "4"
    # Its tokens came back: the headers said 962 left, the reservation still taken.
    assert response.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert gw.counters()[REQUESTS:DAY_TOKENS] == (1, 0, 0)


def test_a_request_the_engine_refuses_is_charged_nothing(make_gateway: Any) -> None:
    def refuses(request: httpx.Request) -> httpx.Response:
        error = {"message": "maximum context length is 8192 tokens", "type": "BadRequestError"}
        return httpx.Response(400, json={"error": {**error, "param": None, "code": 400}})

    gw: Gateway = make_gateway(refuses)
    gw.limit(key=Limits(requests_per_minute=5, tokens_per_minute=1000, tokens_per_day=10_000))
    for left, stream in ((4, False), (3, True)):
        response = gw.post({**CHAT, "stream": stream})
        assert response.status_code == 400
        assert "maximum context length" in response.text
        # Its tokens came back: a client pacing itself by the headers is not told they did not
        # (it read 962 of 1000 left, the reservation still taken).
        assert response.headers["x-ratelimit-remaining-tokens"] == "1000"
        assert response.headers["x-ratelimit-remaining-requests"] == str(left)
    gw.call(gw.service.quota.drain)
    # Both requests count as requests; their token reservations all came back.
    assert gw.counters()[REQUESTS:DAY_TOKENS] == (2, 0, 0)
    records = [record for _id, record in gw.usage.read(10)]
    assert [(r.status, r.error_code, r.prompt_tokens) for r in records] == [
        (400, "upstream_rejected", 0),
    ] * 2


def test_leases_of_requests_in_flight_are_renewed_and_crashed_ones_expire(
    make_gateway: Any,
) -> None:
    gw: Gateway = make_gateway(lease_s=60, max_request_s=120)
    gw.limit(key=Limits(concurrent_requests=2))
    in_flight = gw.call(open_stream, gw)  # held: a stream still being served
    for _ in range(3):
        gw.clock.advance(40_000)
        gw.call(gw.service.quota.renew_leases)
        assert gw.counters()[CONCURRENCY] == 1, "renewed while in flight"
    gw.clock.advance(40_000)
    gw.call(gw.service.quota.renew_leases)  # older than max_request_s: no longer renewed
    gw.clock.advance(60_001)
    assert gw.counters()[CONCURRENCY] == 0
    assert in_flight is not None


def test_a_quota_change_applies_with_the_next_snapshot(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(requests_per_minute=1))
    assert [gw.post(CHAT).status_code for _ in range(2)] == [200, 429]
    gw.limit(key=Limits(requests_per_minute=5))
    response = gw.post(CHAT)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "5"


def test_callers_without_limits_skip_the_store(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    response = gw.post(CHAT)
    assert response.status_code == 200
    assert not any(h.startswith("x-ratelimit") for h in response.headers)
    assert gw.counters() == (0, 0, 0, 0, 0, 0)


def test_decisions_are_counted_in_metrics(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(requests_per_minute=1))
    gw.post(CHAT)
    gw.post(CHAT)
    text = gw.client.get("/metrics").text
    assert (
        'trunkline_quota_decisions_total{decided_by="store",limit="",outcome="admitted"} 1.0'
        in text
    )
    assert (
        'trunkline_quota_decisions_total{decided_by="store",limit="requests_per_minute",'
        'outcome="rate_limited"} 1.0'
    ) in text
    assert "trunkline_quota_store_degraded 0.0" in text


class Slow(InMemoryQuotaStore):
    """A store whose reservations are made, but answered only once ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def reserve(self, request: ReserveRequest) -> Outcome:
        outcome = await super().reserve(request)
        self.asked.set()
        await self.answer.wait()
        return outcome


def test_a_client_that_leaves_while_the_store_answers_leaves_no_reservation_held(
    make_gateway: Any,
) -> None:
    """Its request is cancelled while awaiting the store's answer: the reservation the store
    made all the same is given back, not left holding a slot and its tokens."""
    slow = Slow()
    gw: Gateway = make_gateway(store=slow)
    gw.limit(key=Limits(concurrent_requests=1, tokens_per_day=10_000))

    async def leave_while_reserving() -> None:
        principal = gw.service.authenticate(f"Bearer {gw.key}")
        raw = httpx.Request("POST", "/", json=CHAT).content
        request = asyncio.ensure_future(gw.service.handle("chat", raw, principal, "req-left"))
        await slow.asked.wait()
        request.cancel()  # what unless_client_leaves does when the client disconnects
        with contextlib.suppress(asyncio.CancelledError):
            await request
        slow.answer.set()
        await gw.service.quota.drain()

    gw.call(leave_while_reserving)

    assert gw.counters()[CONCURRENCY] == 0 and gw.counters()[DAY_TOKENS] == 0
    assert gw.post(CHAT).status_code == 200


class _OneTokenPerWord:
    """The model's tokenizer, as far as this test needs it."""

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        return [1] * len(body["messages"][-1]["content"].split())


def test_with_the_models_tokenizer_a_reservation_counts_the_prompt_exactly(
    make_gateway: Any,
) -> None:
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_minute=1000))
    long_words = {**CHAT, "messages": [{"role": "user", "content": "internationalization " * 10}]}
    estimate = estimate_prompt_tokens("chat", long_words)
    assert estimate > 10

    estimated = gw.post(long_words)
    tokenizers = {"llama-8b-served": _OneTokenPerWord()}
    gw.service.prompt_tokens = PromptTokens(tokenizers, VllmHashing(), max_queue_wait_s=UNHURRIED_S)
    exact = gw.post(long_words)

    assert estimated.status_code == exact.status_code == 200
    assert estimated.headers["x-ratelimit-remaining-tokens"] == str(1000 - (estimate + 20))
    # 10 words: 10 tokens reserved, + max_tokens; the first request settled at what it used.
    assert exact.headers["x-ratelimit-remaining-tokens"] == str(1000 - USED - (10 + 20))
