"""Quotas as an OpenAI client meets them at the gateway: headers, refusals, settling."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec
import pytest
from tests.unit.gateway.engines_support import UNHURRIED_S
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway.prompt_tokens import PromptTokens
from trunkline.gateway.routing.vllm_hashes import VllmHashing
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.quota.limits import (
    CONCURRENCY,
    DAY_TOKENS,
    MONTH_COST,
    REQUESTS,
    TOKENS,
    Limits,
    Price,
    price_key,
)
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.store import Outcome, ReserveRequest
from unit.quota.conftest import NOON, Gateway, ms

CHAT: dict[str, Any] = {
    "model": "llama",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 20,
}
PROMPT = 18  # the prompt estimate of CHAT
RESERVED = PROMPT + 20  # + its max_tokens
USED = 21 + 3  # what the scripted engine reports


def error_of(response: httpx.Response, status: int, code: str, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["type"]) == (code, kind)
    return error


def test_every_answer_carries_the_tightest_rate_limit_headers(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(now_ms=NOON + 45_000)
    gw.limit(key=Limits(requests_per_minute=10), tenant=Limits(tokens_per_minute=1000))

    plain = gw.post(CHAT)
    stream = gw.post({**CHAT, "stream": True})

    assert plain.status_code == stream.status_code == 200
    assert plain.headers["x-ratelimit-limit-requests"] == "10"
    assert plain.headers["x-ratelimit-remaining-requests"] == "9"
    assert plain.headers["x-ratelimit-limit-tokens"] == "1000"
    assert plain.headers["x-ratelimit-remaining-tokens"] == str(1000 - RESERVED)
    assert plain.headers["x-ratelimit-reset-requests"] == "15s"
    assert stream.headers["x-ratelimit-remaining-requests"] == "8"
    assert stream.headers["x-ratelimit-remaining-tokens"] == str(1000 - USED - RESERVED)
    assert stream.headers["content-type"].startswith("text/event-stream")


def test_full_minute_is_429_rate_limit_exceeded_with_when_to_retry(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(now_ms=NOON + 45_250)
    gw.limit(key=Limits(requests_per_minute=2))
    assert [gw.post(CHAT).status_code for _ in range(2)] == [200, 200]

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "requests per minute" in error["message"] and "Limit 2, Used 2" in error["message"]
    assert refused.headers["retry-after-ms"] == "14750"
    assert refused.headers["retry-after"] == "15"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(gw.upstream) == 2, "a refused request never reaches an engine"
    gw.clock.advance(14_750)
    assert gw.post(CHAT).status_code == 200


def test_reservations_stop_concurrent_streams_from_overshooting_tokens(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(tokens_per_minute=2 * RESERVED + 10))
    first = gw.call(open_stream, gw)
    second = gw.call(open_stream, gw)

    refused = gw.post(CHAT)

    error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert gw.counters()[TOKENS] == 2 * RESERVED, "two streams in flight hold their reservations"
    gw.call(first.aclose)
    gw.call(second.aclose)
    gw.call(gw.service.quota.drain)
    assert gw.post(CHAT).status_code == 200


def test_a_request_larger_than_the_limit_is_told_not_to_retry(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_minute=1000))

    refused = gw.post({**CHAT, "max_tokens": 2000})

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "Request too large" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers


@pytest.mark.parametrize(
    "zero",
    [
        Limits(requests_per_minute=0),
        Limits(concurrent_requests=0),
        # It said "Request too large ... Limit 0, Used 0, Requested 38. Lower max_tokens".
        Limits(tokens_per_minute=0),
    ],
)
def test_a_limit_of_zero_says_so_not_to_shorten_the_prompt(make_gateway: Any, zero: Limits) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=zero)

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "admits no requests" in error["message"] and "max_tokens" not in error["message"]
    assert refused.headers["x-should-retry"] == "false"


def test_spent_monthly_budget_is_insufficient_quota_until_the_month_ends(make_gateway: Any) -> None:
    gw: Gateway = make_gateway(now_ms=ms(2027, 6, 30, 23, 59, 0))
    gw.limit(tenant=Limits(tokens_per_month=USED + PROMPT - 1))  # not even a prompt left
    assert gw.post(CHAT).status_code == 200

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "insufficient_quota", "insufficient_quota")
    assert "2027-07-01T00:00:00Z" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.headers
    gw.clock.advance(60_000)
    assert gw.post(CHAT).status_code == 200, "a new month, a new budget"


@pytest.mark.parametrize("zero", [Limits(tokens_per_day=0), Limits(cost_per_month=0)])
def test_a_budget_of_zero_says_it_admits_nothing_not_when_it_resets(
    make_gateway: Any, zero: Limits
) -> None:
    """It said "It resets at 2027-06-16T00:00:00Z": a client waiting for that was refused
    again then."""
    gw: Gateway = make_gateway()
    gw.limit(key=zero, prices={price_key("llama-8b-served", "gold"): Price(1, 1, 1)})

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "insufficient_quota", "insufficient_quota")
    assert "admits no requests" in error["message"] and "resets" not in error["message"]
    assert refused.headers["x-should-retry"] == "false"


def test_a_budget_with_room_for_the_prompt_but_not_max_tokens_says_lower_max_tokens(
    make_gateway: Any,
) -> None:
    """Not insufficient_quota, which clients take for a spent budget: a smaller max_tokens, or
    one at all (unset, a request reserves the gateway's maximum), fits."""
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_day=USED + RESERVED - 1))
    assert gw.post(CHAT).status_code == 200

    refused = gw.post(CHAT)
    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "Request too large" in error["message"] and f"{RESERVED - 1} left" in error["message"]
    assert "Lower max_tokens" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    assert gw.post({**CHAT, "max_tokens": 19}).status_code == 200  # it fits, as it says


def test_a_prompt_larger_than_a_whole_budget_is_too_large_not_spent(make_gateway: Any) -> None:
    """It was insufficient_quota, "It resets at 2027-07-01T00:00:00Z": the next month's budget
    refused it alike."""
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_month=PROMPT - 1))

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "Request too large" in error["message"] and "resets" not in error["message"]
    assert refused.headers["x-should-retry"] == "false"


def test_a_max_tokens_above_the_gateways_reservation_cap_is_reserved_whole(
    make_gateway: Any,
) -> None:
    """The engine generates up to max_tokens: reserving only the gateway's 4,096 let one
    request with max_tokens 100,000 spend twenty times what was left of a budget."""
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_day=20_000))

    refused = gw.post({**CHAT, "max_tokens": 100_000})
    spread = gw.post({**CHAT, "max_tokens": 4000, "n": 5})

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "Request too large" in error["message"] and "Lower max_tokens" in error["message"]
    assert f"Requested {PROMPT + 100_000}" in error["message"]
    error_of(spread, 429, "rate_limit_exceeded", "rate_limit_error")
    assert gw.upstream == [], "neither reached an engine"
    assert gw.post({**CHAT, "max_tokens": 19_000}).status_code == 200


def test_an_answer_maximum_over_the_context_window_is_a_400_and_reserves_nothing(
    make_gateway: Any,
) -> None:
    """Reserved first, ``max_tokens: 100000`` on a 1,000-token model was a 429 *Request too
    large*, which the OpenAI SDK retries; vLLM would refuse it as a bad request."""
    gw: Gateway = make_gateway()
    gw.world.aliases["llama"] = msgspec.structs.replace(
        gw.world.aliases["llama"], context_length=1000
    )
    gw.limit(tenant=Limits(tokens_per_minute=20_000))

    refused = gw.post({**CHAT, "max_tokens": 100_000})
    refused_new_name = gw.post({**CHAT, "max_completion_tokens": 1001})

    error = error_of(refused, 400, "context_length_exceeded", "invalid_request_error")
    assert error["param"] == "max_tokens"
    assert "context window of 1000 tokens" in error["message"]
    error = error_of(refused_new_name, 400, "context_length_exceeded", "invalid_request_error")
    assert error["param"] == "max_completion_tokens"
    assert gw.upstream == [] and gw.counters("tenant")[TOKENS] == 0

    # Within the window, no answer reserves more than it: unset, or n of them.
    unset = gw.post({k: v for k, v in CHAT.items() if k != "max_tokens"})
    assert unset.headers["x-ratelimit-remaining-tokens"] == str(20_000 - PROMPT - 1000)
    several = gw.post({**CHAT, "max_tokens": 1000, "n": 3})
    remaining = 20_000 - USED - PROMPT - 3 * 1000
    assert several.headers["x-ratelimit-remaining-tokens"] == str(remaining)


def test_monthly_cost_budget_counts_list_price(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    price = Price(input=1_000_000, cached_input=500_000, output=2_000_000)  # $1 / 0.5 / 2 per 1M
    actual = price.cost(21, 16, 3)  # 5,000 + 8,000 + 6,000 nano-dollars
    reserved = price.cost(18, 0, 20)
    gw.limit(
        tenant=Limits(cost_per_month=actual + reserved - 1),
        prices={price_key("llama-8b-served", "gold"): price},
    )
    assert gw.post(CHAT).status_code == 200
    assert gw.counters("tenant")[MONTH_COST] == actual == 19_000

    # The prompt would fit the 57,999 nano-dollars left; its max_tokens would not. Amounts
    # under a dollar are shown whole, not as $0.00.
    error = error_of(gw.post(CHAT), 429, "rate_limit_exceeded", "rate_limit_error")
    assert "cost per month (USD)" in error["message"]
    assert "Limit $0.000076999, Used $0.000019, Requested $0.000058" in error["message"]


def test_a_failed_request_uses_tokens_but_no_cost_budget_since_the_bill_leaves_it_out(
    make_gateway: Any,
) -> None:
    """The price book bills completed and cancelled requests (``billable_outcomes``): a budget
    charged for an engine's failures ran out before the bill said so."""
    gw: Gateway = make_gateway(handler=lambda request: httpx.Response(503, text="overloaded"))
    price = Price(input=1_000_000, cached_input=500_000, output=2_000_000)
    gw.limit(
        tenant=Limits(cost_per_month=10**9, tokens_per_day=10**6),
        prices={price_key("llama-8b-served", "gold"): price},
    )
    assert gw.post(CHAT).status_code == 502
    used = gw.counters("tenant")
    assert used[DAY_TOKENS] > 0  # the engines prefilled the prompt: token limits count it
    assert used[MONTH_COST] == 0


def test_settle_charges_what_the_engine_reported(make_gateway: Any) -> None:
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(tokens_per_day=10_000))
    assert gw.post(CHAT).status_code == 200
    assert gw.post({**CHAT, "stream": True}).status_code == 200
    assert gw.counters() == (2, 2 * USED, 0, 2 * USED, 2 * USED, 0)


async def open_stream(gw: Gateway, request_id: str = "req-stream") -> Any:
    """A streamed request whose first event was read and whose client is still there."""
    service = gw.service
    principal = service.authenticate(f"Bearer {gw.key}")
    raw = httpx.Request("POST", "/", json={**CHAT, "stream": True}).content
    reply = await service.handle("chat", raw, principal, request_id)
    events = reply.events
    assert events is not None
    await events.__anext__()
    return events


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
    for stream in (False, True):
        response = gw.post({**CHAT, "stream": stream})
        assert response.status_code == 400
        assert "maximum context length" in response.text
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
