"""Cascading aliases when the small model cannot answer: a prompt or answer over its context,
a refusal, a pool shedding load, admission refusing it; and what the client gets when the
escalation fails or is refused too."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
from tests.unit.gateway.engines_support import PoolsRefused
from tests.unit.gateway.test_gateway import _ready, auth, sse_data
from tests.unit.gateway.test_gateway_cascade import CHAT, _gateway, cascade_world, small_engine
from tests.unit.gateway.upstreams import chat_any

from trunkline.gateway.admission.decision import DEADLINE_EXCEEDED, OVERLOADED, SLO_UNATTAINABLE


def small_refusing(message: str):  # type: ignore[no-untyped-def]
    """A small engine answering every request HTTP 400 with ``message``, as vLLM words it."""

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] != "small-served":
            return chat_any(request)
        error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
        return httpx.Response(400, json={"error": error})

    return handler


TOO_LONG = (
    "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens "
    "(8900 in the messages, 100 in the completion). Please reduce the length of the messages "
    "or completion."
)


def test_a_prompt_over_the_small_models_context_escalates(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """The large model's context is often longer: its answer, not the small one's 400."""
    gw, key = _gateway(make_gateway, small_refusing(TOO_LONG))
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == "context_length_exceeded"
    assert response.json()["model"] == "llama-8b-served"
    records = sorted(gw.drain_usage(), key=lambda r: r.request_id)
    assert [(r.model, r.status) for r in records] == [
        ("small-served", 400), ("llama-8b-served", 200),
    ]  # fmt: skip


def test_an_answer_maximum_over_the_small_models_context_goes_to_the_large_one_alone(
    make_gateway,
) -> None:  # type: ignore[no-untyped-def]
    """vLLM 0.32 refuses ``max_tokens`` over its window; the gateway knows the catalog's and
    does not send (nor charge) the small attempt."""
    world = cascade_world()
    auto = world.aliases["auto"]
    assert auto.cascade is not None
    world.aliases["auto"] = msgspec.structs.replace(
        auto,
        context_length=8192,
        cascade=msgspec.structs.replace(auto.cascade, context_length=131072),
    )
    gw, key = _ready(make_gateway, small_engine("Paris."), world=world)
    over_small = {**CHAT, "max_tokens": 10_000}
    response = gw.client.post("/v1/chat/completions", json=over_small, headers=auth(key))

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == "context_length_exceeded"
    assert [json.loads(r.content)["model"] for r in gw.upstream] == ["llama-8b-served"]
    assert [(r.model, r.status) for r in gw.drain_usage()] == [("llama-8b-served", 200)]

    over_both = {**CHAT, "max_tokens": 131_073}
    response = gw.client.post("/v1/chat/completions", json=over_both, headers=auth(key))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("max_tokens", "context_length_exceeded")
    assert len(gw.upstream) == 1


def test_a_vllm_refusal_of_an_answer_maximum_escalates(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A catalog that does not know the small model's window: its engine's 400 escalates."""
    refusal = (
        "max_tokens=10000 cannot be greater than max_model_len=8192. Please request fewer "
        "output tokens. (parameter=max_tokens, value=10000)"
    )
    gw, key = _gateway(make_gateway, small_refusing(refusal))
    response = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": 10_000}, headers=auth(key)
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade-reason"] == "context_length_exceeded"


def test_a_request_the_small_engine_refuses_otherwise_is_not_escalated(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, small_refusing("temperature must be non-negative"))
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert response.status_code == 400
    assert "x-trunkline-cascade" not in response.headers
    assert [json.loads(r.content)["model"] for r in gw.upstream] == ["small-served"]


def test_a_small_pool_shedding_load_escalates(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A 429 from the small engines says they are busy, not that the request is bad: the
    large model's pools may well take it."""

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] != "small-served":
            return chat_any(request)
        error = {"message": "too many requests", "type": "RateLimitError", "code": 429}
        return httpx.Response(429, headers={"retry-after": "3"}, json={"error": error})

    gw, key = _gateway(make_gateway, handler)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == "first_failed"
    assert response.json()["model"] == "llama-8b-served"
    records = sorted(gw.drain_usage(), key=lambda r: r.request_id)
    assert [(r.model, r.status) for r in records] == [
        ("small-served", 429), ("llama-8b-served", 200),
    ]  # fmt: skip


def test_a_cascade_with_both_models_closed_to_the_tier_is_403(make_gateway) -> None:  # type: ignore[no-untyped-def]
    world = cascade_world()
    for name in ("small-eu", "h100-eu"):
        world.pools[name] = msgspec.structs.replace(world.pools[name], tiers=("platinum",))
    gw, key = _ready(make_gateway, small_engine("Paris."), world=world)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_pool_for_tenant"
    assert gw.upstream == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_escalation_returns_the_small_answer_it_paid_for(
    make_gateway, stream: bool
) -> None:  # type: ignore[no-untyped-def]
    """The large model unreachable: the client gets the small answer, marked, not a 503 whose
    retry would pay for the small attempt again."""
    small = small_engine("I'm sorry, but I can't help with that.")

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content)["model"] != "small-served":
            raise httpx.ConnectError("refused")
        return small(request)  # type: ignore[no-any-return]

    gw, key = _gateway(make_gateway, handler)
    body = {**CHAT, "stream": True} if stream else CHAT
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        text = "".join(r.iter_text())
        assert r.status_code == 200, text
        assert r.headers["x-trunkline-cascade"] == "first"
        assert r.headers["x-trunkline-cascade-reason"] == "escalation_failed"
        assert r.headers["x-trunkline-pool"] == "small-eu"

    if stream:
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in sse_data(text))
    else:
        content = json.loads(text)["choices"][0]["message"]["content"]
    assert content == "I'm sorry, but I can't help with that."
    records = sorted(gw.drain_usage(), key=lambda r: r.request_id)
    assert [(r.model, r.status) for r in records] == [
        ("small-served", 200), ("llama-8b-served", 503),
    ]  # fmt: skip


def test_when_both_models_fail_the_client_gets_the_error(make_gateway) -> None:  # type: ignore[no-untyped-def]
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gw, key = _gateway(make_gateway, handler)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_unavailable"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("refusal", [SLO_UNATTAINABLE, DEADLINE_EXCEEDED, OVERLOADED])
def test_a_small_attempt_refused_by_admission_escalates_to_the_large_model(
    make_gateway, refusal: str, stream: bool
) -> None:  # type: ignore[no-untyped-def]
    """The small pool cannot start it in time; the large one can: the client gets the large
    answer, not the small pool's 503 (or 429), and only the attempt sent is metered."""
    admission = PoolsRefused("small-eu", reason=refusal)
    gw, key = _ready(
        make_gateway, small_engine("Paris."), world=cascade_world(),
        admission=lambda _engines: admission,
    )  # fmt: skip
    body = {**CHAT, "stream": True} if stream else CHAT
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        text = "".join(r.iter_text())
        assert r.status_code == 200, text
        assert r.headers["x-trunkline-cascade"] == "escalated"
        assert r.headers["x-trunkline-cascade-reason"] == "first_not_admitted"
        assert r.headers["x-trunkline-pool"] == "h100-eu"
        request_id = r.headers["x-request-id"]

    models = {c["model"] for c in sse_data(text)} if stream else {json.loads(text)["model"]}
    assert models == {"llama-8b-served"}
    assert [json.loads(r.content)["model"] for r in gw.upstream] == ["llama-8b-served"]
    assert [(r.request_id, r.model, r.status) for r in gw.drain_usage()] == [
        (f"{request_id}.escalated", "llama-8b-served", 200),
    ]


def test_when_admission_refuses_both_models_the_client_gets_the_refusal(make_gateway) -> None:  # type: ignore[no-untyped-def]
    admission = PoolsRefused("small-eu", "h100-eu")
    gw, key = _ready(
        make_gateway, small_engine("Paris."), world=cascade_world(),
        admission=lambda _engines: admission,
    )  # fmt: skip
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "slo_unattainable"
    assert response.headers["retry-after"] == "2"
    assert gw.upstream == [] and gw.drain_usage() == []
