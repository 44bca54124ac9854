"""``run_cascade`` over scripted attempts: what the client gets when the escalation is refused
before it is sent (a quota, admission) after the small answer was paid for."""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec
import pytest

from trunkline.errors import QuotaExhausted, RateLimited, TrunklineError
from trunkline.gateway.admission.decision import SLO_UNATTAINABLE, Decision
from trunkline.gateway.admission.errors import rejection_error
from trunkline.gateway.cascade import CascadePlan, plan_cascade
from trunkline.gateway.cascade.run import run_cascade
from trunkline.gateway.pipeline import ParsedRequest, parse_body
from trunkline.gateway.reply import Reply
from trunkline.snapshot import AliasEntry, CascadeEntry, TierEntry

ALIAS = AliasEntry("auto", "small", "chat", ("small-pool",), CascadeEntry("large", ("big-pool",)))
GOLD = TierEntry("gold", 100, 500, 50, True)
REFUSAL = "I'm sorry, but I can't help with that."
SPENT = {
    "x-ratelimit-limit-requests": "1",
    "x-ratelimit-remaining-requests": "0",
    "retry-after": "41",
    "retry-after-ms": "40120",
}


def quota_exhausted() -> TrunklineError:
    return QuotaExhausted(
        "You exceeded the budget of your tenant on cost per month ($5.00).",
        reason="insufficient_quota",
        extra={"headers": SPENT, "limit": "cost_per_month"},
    )


def rate_limited() -> TrunklineError:
    return RateLimited(
        "Rate limit reached for your API key on requests per minute (RPM).",
        reason="rate_limit_exceeded",
        extra={"headers": SPENT, "limit": "requests_per_minute"},
    )


def not_admitted() -> TrunklineError:
    return rejection_error(Decision.reject(SLO_UNATTAINABLE, 2.0), GOLD)


class Attempts:
    """The small model answers ``small`` (or raises it); the large attempt raises ``large``."""

    def __init__(self, small: str | TrunklineError, large: TrunklineError) -> None:
        self.small, self.large = small, large
        self.sent: list[str] = []

    async def __call__(self, sent: ParsedRequest, target: AliasEntry, attempt_id: str) -> Reply:
        self.sent.append(target.model)
        if target.model == "large":
            raise self.large
        if isinstance(self.small, TrunklineError):
            raise self.small
        message = {"role": "assistant", "content": self.small}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        usage = {"prompt_tokens": 9, "completion_tokens": 9}
        body = {"id": "c1", "model": "small", "choices": [choice], "usage": usage}
        headers = {"x-trunkline-pool": "small-pool", "x-ratelimit-remaining-requests": "1"}
        return Reply(200, msgspec.json.encode(body), None, headers)


def _plan(stream: bool) -> tuple[CascadePlan, ParsedRequest]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    request = parse_body("chat", json.dumps(body).encode())
    plan = plan_cascade(request, ALIAS)
    assert plan is not None
    return plan, request


async def _content(reply: Reply) -> str:
    if reply.events is None:
        return str(msgspec.json.decode(reply.body)["choices"][0]["message"]["content"])
    text = b"".join([event async for event in reply.events]).decode()
    chunks = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusal", [quota_exhausted, rate_limited, not_admitted])
async def test_an_escalation_refused_before_it_is_sent_returns_the_small_answer(
    refusal: Callable[[], TrunklineError], stream: bool
) -> None:
    """The small answer failed its check and was paid for; the large attempt is refused by
    the caller's quota (or admission): the client gets the small answer, marked, not an error
    whose retry would pay for the small attempt again."""
    plan, request = _plan(stream)
    attempts = Attempts(REFUSAL, refusal())

    reply = await run_cascade(plan, request, "req-1", attempts)

    assert reply.status == 200
    assert reply.headers["x-trunkline-cascade"] == "first"
    assert reply.headers["x-trunkline-cascade-reason"] == "escalation_refused"
    assert reply.headers["x-trunkline-pool"] == "small-pool"
    assert "retry-after" not in reply.headers  # an answer, not a refusal to retry
    if refusal is not_admitted:
        assert reply.headers["x-trunkline-admission"] == "rejected;slo_unattainable"
    else:  # the limits as the refusal read them, not as the small attempt found them
        assert reply.headers["x-ratelimit-remaining-requests"] == "0"
    assert await _content(reply) == REFUSAL
    assert attempts.sent == ["small", "large"]


async def test_with_no_small_answer_the_refusal_of_the_escalation_reaches_the_client() -> None:
    plan, request = _plan(False)
    attempts = Attempts(not_admitted(), quota_exhausted())

    with pytest.raises(QuotaExhausted):
        await run_cascade(plan, request, "req-1", attempts)
    assert attempts.sent == ["small", "large"]
