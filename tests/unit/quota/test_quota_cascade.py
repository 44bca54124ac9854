"""A cascading alias under the caller's quotas: the escalation reserves its own, and a refusal
of it after the small answer was paid for leaves the client that answer."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from tests.unit.gateway.test_gateway import sse_data
from tests.unit.gateway.test_gateway_cascade import cascade_world, small_engine

from trunkline.quota.limits import Limits, Price, price_key
from unit.quota.conftest import Gateway

REFUSAL = "I'm sorry, but I can't help with that."
MESSAGES = [{"role": "user", "content": "hello"}]
PROMPT = 18  # the prompt estimate of MESSAGES
PER_TOKEN = 1_000  # nano-dollars per uncached prompt token of the large model


def _cascading(make_gateway: Any) -> Gateway:
    gw: Gateway = make_gateway(small_engine(REFUSAL))
    world = cascade_world()
    gw.world.pools, gw.world.aliases, gw.world.tenants = world.pools, world.aliases, world.tenants
    return gw


def _drain(gw: Gateway) -> list[Any]:
    batch = gw.usage.read(100)
    gw.usage.ack([message_id for message_id, _record in batch])
    return [record for _message_id, record in batch]


def _one_request_a_minute(gw: Gateway) -> dict[str, str]:
    """The small attempt takes the minute's one request: the escalation is rate limited. The
    answer shows the limit as the refusal read it: none left."""
    gw.limit(key=Limits(requests_per_minute=1))
    return {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}


def _budget_spent_on_the_large_model(gw: Gateway) -> dict[str, str]:
    """A plain call to the large model leaves less of the monthly budget than the cascade's
    large attempt needs (the small model is free)."""
    large = {"llama-8b-served": Price(PER_TOKEN * 1_000, 0, 0)}
    prices = {price_key(model, "gold"): price for model, price in large.items()}
    gw.limit(tenant=Limits(cost_per_month=PROMPT * PER_TOKEN), prices=prices)
    plain = gw.post({"model": "llama", "messages": MESSAGES, "max_tokens": 20})
    assert plain.status_code == 200, plain.text
    _drain(gw)  # not the cascade's
    return {}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("limit", [_one_request_a_minute, _budget_spent_on_the_large_model])
def test_an_escalation_refused_by_quota_answers_with_the_small_answer_paid_for(
    make_gateway: Any, limit: Callable[[Gateway], dict[str, str]], stream: bool
) -> None:
    """The small answer failed its check (a refusal) and was paid for; the large attempt is
    refused by the caller's quota: the client gets the small answer, marked, rather than a
    429 whose retry would pay for the small attempt again."""
    gw = _cascading(make_gateway)
    shown = limit(gw)
    body: dict[str, Any] = {"model": "auto", "messages": MESSAGES, "stream": stream}

    response = gw.post(body)

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "first"
    assert response.headers["x-trunkline-cascade-reason"] == "escalation_refused"
    assert "retry-after" not in response.headers
    assert {name: response.headers[name] for name in shown} == shown
    if stream:
        chunks = sse_data(response.text)
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert {c["model"] for c in chunks} == {"small-served"}
    else:
        content = response.json()["choices"][0]["message"]["content"]
        assert response.json()["model"] == "small-served"
    assert content == REFUSAL
    # The small attempt alone was sent, and is metered once; the large one never left.
    sent = [json.loads(r.content)["model"] for r in gw.upstream]
    assert sent[-1] == "small-served" and sent.count("small-served") == 1
    records = _drain(gw)
    assert [(r.model, r.status) for r in records] == [("small-served", 200)]
