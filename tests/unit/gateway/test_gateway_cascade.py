"""Cascading aliases through the gateway, with scripted small and large engines behind it:
which model answers, what the client sees, and that every attempt is metered."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
from tests.unit.gateway.conftest import TENANT_A, Harness, World, default_world
from tests.unit.gateway.test_gateway import _ready, auth, sse_data
from tests.unit.gateway.upstreams import chat_any

from trunkline.snapshot import AliasEntry, CascadeEntry, EndpointEntry, PoolEntry, TenantEntry

SALT_A = "5a1f0c0ffee0c0ffee0c0ffee0c0ffee"


def cascade_world(checks: CascadeEntry | None = None) -> World:
    world = default_world()
    world.pools["small-eu"] = PoolEntry(
        "small-eu", "small-served", "l40s", "eu-west", False, 16,
        (EndpointEntry("s1", "http://small-1"),),
    )  # fmt: skip
    checks = checks or CascadeEntry("llama-8b-served", ("h100-eu",), min_mean_logprob=-1.0)
    world.aliases["auto"] = AliasEntry("auto", "small-served", "chat", ("small-eu",), checks)
    tenant = world.tenants[TENANT_A]
    world.tenants[TENANT_A] = TenantEntry(
        TENANT_A, tenant.slug, tenant.tier, tenant.regions, tenant.aliases | {"auto"}, SALT_A
    )
    return world


def small_engine(content: str, finish: str = "stop", logprob: float = -0.2):  # type: ignore[no-untyped-def]
    """A small model answering ``content``; the large one answers like ``chat_any``."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["model"] != "small-served":
            return chat_any(request)
        if request.url.host == "small-1" and content == "down":
            raise httpx.ConnectError("refused")
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{"token": "t", "logprob": logprob, "top_logprobs": []}]}
        choices = [
            {"index": index, "message": {"role": "assistant", "content": content},
             "logprobs": logprobs, "finish_reason": finish}
            for index in range(body.get("n") or 1)
        ]  # fmt: skip
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        return httpx.Response(200, json={"id": "c-small", "object": "chat.completion",
                                         "created": 1, "model": "small-served",
                                         "choices": choices, "usage": usage})  # fmt: skip

    return handler


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Capital of France?"}]}


def _gateway(make_gateway, handler, checks: CascadeEntry | None = None) -> tuple[Harness, str]:  # type: ignore[no-untyped-def]
    return _ready(make_gateway, handler, world=cascade_world(checks))  # type: ignore[no-any-return]


def test_a_good_small_answer_is_kept_and_metered_once(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, small_engine("Paris."))
    response = gw.client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(key), "x-request-id": "req-1"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "first"
    body = response.json()
    assert body["model"] == "small-served"
    assert body["choices"][0]["message"]["content"] == "Paris."
    assert body["choices"][0]["logprobs"] is None  # asked upstream for the check, not by the client
    [sent] = gw.upstream
    assert json.loads(sent.content)["logprobs"] is True
    [record] = gw.drain_usage()
    assert (record.request_id, record.model, record.alias, record.status) == (
        response.headers["x-request-id"], "small-served", "auto", 200,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("engine", "reason"),
    [
        (small_engine("Paris, the", finish="length"), "truncation"),
        (small_engine("I'm sorry, but I can't help with that."), "refusal"),
        (small_engine("Paris.", logprob=-4.0), "low_logprob"),
        (small_engine("down"), "first_failed"),
    ],
)
def test_a_failed_check_escalates_to_the_large_model_and_both_are_metered(
    make_gateway,
    engine,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    gw, key = _gateway(make_gateway, engine)
    response = gw.client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(key), "x-request-id": "req-2"}
    )

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == reason
    assert response.headers["x-client-request-id"] == "req-2"
    request_id = response.headers["x-request-id"]
    assert response.json()["model"] == "llama-8b-served"
    large = json.loads(gw.upstream[-1].content)
    assert large["model"] == "llama-8b-served" and "logprobs" not in large
    records = sorted(gw.drain_usage(), key=lambda r: r.request_id)
    assert [(r.request_id, r.model) for r in records] == [
        (request_id, "small-served"),
        (f"{request_id}.escalated", "llama-8b-served"),
    ]
    assert records[1].status == 200 and records[1].completion_tokens == 3
    assert records[0].status == (503 if reason == "first_failed" else 200)


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_the_clients_own_max_tokens_is_kept(make_gateway, stream: bool) -> None:  # type: ignore[no-untyped-def]
    """The large model gets the same max_tokens and would stop there too: escalating would
    pay twice for an answer as long."""
    gw, key = _gateway(make_gateway, small_engine("Paris, the", finish="length"))
    body = {**CHAT, "max_tokens": 2, **({"stream": True} if stream else {})}
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        text = "".join(r.iter_text())
        assert r.status_code == 200, text
        assert r.headers["x-trunkline-cascade"] == "first"
        assert "x-trunkline-cascade-reason" not in r.headers

    if stream:
        chunks = sse_data(text)
        assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
        assert {c["model"] for c in chunks} == {"small-served"}
    else:
        assert json.loads(text)["choices"][0]["finish_reason"] == "length"
    assert [json.loads(r.content)["model"] for r in gw.upstream] == ["small-served"]
    assert [(r.model, r.completion_tokens) for r in gw.drain_usage()] == [("small-served", 2)]


def test_an_answer_cut_short_of_the_clients_max_tokens_escalates(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """Two tokens of the 100 allowed: the small model's context ran out, and the large
    model's may well be longer."""
    gw, key = _gateway(make_gateway, small_engine("Paris, the", finish="length"))
    body = {**CHAT, "max_tokens": 100}
    response = gw.client.post("/v1/chat/completions", json=body, headers=auth(key))

    assert response.status_code == 200, response.text
    assert response.headers["x-trunkline-cascade"] == "escalated"
    assert response.headers["x-trunkline-cascade-reason"] == "truncation"
    assert [r.model for r in gw.drain_usage()] == ["small-served", "llama-8b-served"]


def test_a_streaming_client_gets_the_kept_answer_replayed_as_sse(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, small_engine("Paris."))
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        text = "".join(r.iter_text())
        assert r.headers["x-trunkline-cascade"] == "first"
        assert r.headers["content-type"].startswith("text/event-stream")

    chunks = sse_data(text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Paris."
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert text.rstrip().endswith("data: [DONE]")
    assert json.loads(gw.upstream[0].content).get("stream") is None  # asked unstreamed
    [record] = gw.drain_usage()
    assert record.completion_tokens == 2


def test_an_escalated_stream_streams_from_the_large_model(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, small_engine("Paris, the", finish="length"))
    body = {**CHAT, "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=auth(key)) as r:
        text = "".join(r.iter_text())
        assert r.headers["x-trunkline-cascade"] == "escalated"

    chunks = sse_data(text)
    assert {c["model"] for c in chunks} == {"llama-8b-served"}
    assert all("usage" not in c for c in chunks)  # the client did not ask for usage
    assert json.loads(gw.upstream[-1].content)["stream"] is True
    assert len(gw.drain_usage()) == 2


def test_a_confidence_check_asks_the_small_model_and_hides_its_rating(make_gateway) -> None:  # type: ignore[no-untyped-def]
    checks = CascadeEntry("llama-8b-served", ("h100-eu",), min_confidence=0.6)
    gw, key = _gateway(make_gateway, small_engine("Paris.\nConfidence: 0.95"), checks)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))

    assert response.headers["x-trunkline-cascade"] == "first"
    assert response.json()["choices"][0]["message"]["content"] == "Paris."
    asked = json.loads(gw.upstream[0].content)["messages"]
    assert asked[0]["role"] == "system" and "Confidence" in asked[0]["content"]
    assert asked[1:] == CHAT["messages"]


@pytest.mark.parametrize(
    "opening",
    [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "developer", "content": "Be brief."},
    ],
)
def test_the_confidence_instruction_joins_the_clients_own_system_message(
    make_gateway, opening: dict[str, object]
) -> None:  # type: ignore[no-untyped-def]
    """As parts or as a developer message, it is still the conversation's one system message:
    a second one before it is what strict chat templates refuse with a 400."""
    checks = CascadeEntry("llama-8b-served", ("h100-eu",), min_confidence=0.6)
    gw, key = _gateway(make_gateway, small_engine("Paris.\nConfidence: 0.95"), checks)
    body = {**CHAT, "messages": [opening, *CHAT["messages"]]}
    response = gw.client.post("/v1/chat/completions", json=body, headers=auth(key))

    assert response.headers["x-trunkline-cascade"] == "first"
    asked = json.loads(gw.upstream[0].content)["messages"]
    assert [m["role"] for m in asked] == [opening["role"], "user"]
    assert "Be brief." in json.dumps(asked[0]) and "Confidence" in json.dumps(asked[0])


def test_every_answer_of_a_kept_reply_loses_its_confidence_line(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """With ``n`` answers, each followed the instruction: none may show the client its line."""
    checks = CascadeEntry("llama-8b-served", ("h100-eu",), min_confidence=0.6)
    gw, key = _gateway(make_gateway, small_engine("Paris.\nConfidence: 0.95"), checks)
    response = gw.client.post("/v1/chat/completions", json={**CHAT, "n": 3}, headers=auth(key))

    assert response.headers["x-trunkline-cascade"] == "first"
    contents = [c["message"]["content"] for c in response.json()["choices"]]
    assert contents == ["Paris."] * 3


def test_cache_salt_of_the_tenant_goes_upstream_and_replaces_the_clients(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _gateway(make_gateway, chat_any)
    body = {"model": "llama", "messages": CHAT["messages"], "cache_salt": "someone-elses-salt"}
    assert gw.client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 200
    completion = {"model": "llama", "prompt": "hi", "cache_salt": "x"}
    assert gw.client.post("/v1/completions", json=completion, headers=auth(key)).status_code == 200
    embedding = {"model": "bge", "input": "hi", "cache_salt": "x"}
    assert gw.client.post("/v1/embeddings", json=embedding, headers=auth(key)).status_code == 200

    sent = [json.loads(r.content) for r in gw.upstream]
    assert [b.get("cache_salt") for b in sent] == [SALT_A, SALT_A, SALT_A]


def test_engine_controls_a_client_sends_never_reach_the_engine(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A bronze caller must not jump gold's queue on an engine scheduling by priority, nor
    point an engine at another request's KV blocks."""
    gw, key = _gateway(make_gateway, chat_any)
    body = {
        "model": "llama",
        "messages": CHAT["messages"],
        "priority": -100,
        "kv_transfer_params": {"do_remote_prefill": True, "remote_block_ids": [1, 2]},
        "temperature": 0.5,
    }
    assert gw.client.post("/v1/chat/completions", json=body, headers=auth(key)).status_code == 200

    [sent] = [json.loads(r.content) for r in gw.upstream]
    assert "priority" not in sent and "kv_transfer_params" not in sent
    assert sent["temperature"] == 0.5  # sampling parameters pass as sent


@pytest.mark.parametrize(
    ("kept_for_other_tiers", "answered_by", "header", "reason"),
    [
        ("small-eu", "llama-8b-served", "escalated", "first_closed"),
        ("h100-eu", "small-served", "first", "escalation_closed"),
    ],
)
def test_a_cascade_placement_leaves_one_model_of_answers_from_that_one_alone(
    make_gateway, kept_for_other_tiers: str, answered_by: str, header: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    """Placement by tier closes one model's pools to the tenant's tier (gold): the other
    answers the client's own request, and only that attempt is metered."""
    world = cascade_world()
    world.pools[kept_for_other_tiers] = msgspec.structs.replace(
        world.pools[kept_for_other_tiers], tiers=("platinum",)
    )
    if kept_for_other_tiers == "h100-eu":  # the large model's only pool: l40s-us is not its
        world.aliases["auto"] = msgspec.structs.replace(
            world.aliases["auto"],
            cascade=msgspec.structs.replace(world.aliases["auto"].cascade, pools=("h100-eu",)),
        )
    gw, key = _ready(make_gateway, small_engine("I can't help with that."), world=world)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json()["model"] == answered_by
    assert response.headers["x-trunkline-cascade"] == header
    assert response.headers["x-trunkline-cascade-reason"] == reason
    assert [json.loads(r.content)["model"] for r in gw.upstream] == [answered_by]
    assert [r.model for r in gw.drain_usage()] == [answered_by]
