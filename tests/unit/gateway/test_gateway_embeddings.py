"""Completions and embeddings through the gateway: their paths, vLLM's chat-form embeddings, and
encodings the gateway cannot relay refused before an engine is blamed."""

from __future__ import annotations

import json

import httpx
import pytest
from tests.unit.gateway.test_gateway import _ready, assert_openai_error, auth
from tests.unit.gateway.upstreams import chat_any


def test_completions_and_embeddings(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    response = gw.client.post(
        "/v1/completions", json={"model": "llama", "prompt": "x"}, headers=auth(key)
    )
    assert response.status_code == 200
    assert gw.upstream[-1].url.path == "/v1/completions"
    response = gw.client.post(
        "/v1/embeddings", json={"model": "bge", "input": "x"}, headers=auth(key)
    )
    assert response.status_code == 200 and response.json()["data"][0]["embedding"] == [0.1, 0.2]
    records = sorted(gw.drain_usage(), key=lambda r: r.endpoint_kind)
    assert [r.endpoint_kind for r in records] == ["completions", "embeddings"]
    # A plain answer's first byte is the whole answer, not a first token: no TTFT, so it is
    # not counted against the tier's TTFT SLO (nor towards SLA credits).
    assert [r.ttft_ms for r in records] == [None, None]


@pytest.mark.parametrize(
    "payload",
    [
        {"messages": [{"role": "user", "content": "a red bicycle"}]},
        {"messages": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]},
        {"input": [{"role": "user", "content": "a red bicycle"}]},
    ],
    ids=["messages", "conversations", "input-of-messages"],
)
def test_chat_embeddings_reach_the_engine(make_gateway, payload: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """vLLM embeds conversations (its template renders them; multimodal embedding models take
    images so): ``messages`` was refused as a missing 'input'."""
    gw, key = _ready(make_gateway)
    response = gw.client.post("/v1/embeddings", json={"model": "bge", **payload}, headers=auth(key))
    assert response.status_code == 200, response.text
    sent = json.loads(gw.upstream[-1].content)
    assert {k: sent[k] for k in payload} == payload


@pytest.mark.parametrize("encoding", ["bytes", "bytes_only"])
def test_embeddings_as_raw_bytes_are_refused_before_an_engine_is_blamed(
    engine_gateway, encoding: str
) -> None:  # type: ignore[no-untyped-def]
    """vLLM answers them as application/octet-stream, not JSON: a 502 the client could not
    use, counted as the engine's failure, so sending a few ejected healthy engines."""

    def raw_floats(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("encoding_format") == "base64":
            return chat_any(request)  # JSON, as with floats
        usage = {"prompt_tokens": 4, "total_tokens": 4}
        return httpx.Response(
            200,
            content=b"\x00\x00\x80?" * 2,
            headers={"content-type": "application/octet-stream",
                     "metadata": json.dumps({"data": [], "usage": usage})},
        )  # fmt: skip

    gw = engine_gateway(raw_floats)
    body = {"model": "bge", "input": "x", "encoding_format": encoding}
    response = gw.client.post("/v1/embeddings", json=body, headers=auth(gw.key))

    assert_openai_error(response, 400, "invalid_value")
    assert response.json()["error"]["param"] == "encoding_format"
    assert gw.hosts() == []
    assert all(h.request_failures == 0 for h in gw.service.engines.health_report())
    ok = {**body, "encoding_format": "base64"}
    assert gw.client.post("/v1/embeddings", json=ok, headers=auth(gw.key)).status_code == 200


def test_embeddings_messages_that_are_no_conversation_are_refused(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _ready(make_gateway)
    response = gw.client.post(
        "/v1/embeddings", json={"model": "bge", "messages": ["hi"]}, headers=auth(key)
    )
    assert_openai_error(response, 400, "invalid_type")
    assert response.json()["error"]["param"] == "messages"
    assert gw.upstream == []
