"""Quotas as an OpenAI client meets them at the gateway: headers and refusals (settling is in
test_quota_settling.py)."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from trunkline.quota.limits import (
    DAY_TOKENS,
    MONTH_COST,
    TOKENS,
    Limits,
    Price,
    price_key,
)
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


def test_a_completion_without_max_tokens_reserves_the_16_tokens_it_may_generate(
    make_gateway: Any,
) -> None:
    """vLLM (as OpenAI) ends such an answer at 16 tokens. The gateway reserved its 4,096 cap
    for it: under a limit of 1,000 tokens a minute, every such request was refused as too
    large, and 'Lower max_tokens' told the client to lower what it had not set."""
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_minute=1000))

    answered = gw.post({"model": "llama", "prompt": "hello"}, "/v1/completions")

    assert answered.status_code == 200, answered.text
    # It reserved its prompt estimate (2) and the 16 tokens its answer may have.
    assert answered.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 - 16)


def test_documents_embedded_with_truncate_prompt_tokens_reserve_what_the_engine_runs(
    make_gateway: Any,
) -> None:
    """vLLM embeds the first 512 tokens of each; reserved whole (some 3,000 tokens each), a
    batch of eight was refused as larger than a limit of 10,000 tokens a minute."""
    gw: Gateway = make_gateway()
    gw.limit(tenant=Limits(tokens_per_minute=10_000))
    documents = ["lorem ipsum " * 800] * 8

    answered = gw.post(
        {"model": "bge", "input": documents, "truncate_prompt_tokens": 512}, "/v1/embeddings"
    )

    assert answered.status_code == 200, answered.text
    assert answered.headers["x-ratelimit-remaining-tokens"] == str(10_000 - 8 * 512)


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
