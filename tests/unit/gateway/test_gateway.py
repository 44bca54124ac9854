"""The gateway as an OpenAI client sees it, with scripted engines behind it."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from tests.unit.gateway.conftest import TENANT_B, Harness
from tests.unit.gateway.upstreams import Chunks, chat_any, sse_events

from trunkline.settings import GatewaySettings
from trunkline.snapshot import Snapshot

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_data(text: str) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for line in text.split("\n\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def assert_openai_error(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert error["message"]
    return error  # type: ignore[no-any-return]


def _wait_for_version(gw: Harness) -> None:
    """Force the holder to pick up what the test just published (no sleeping)."""
    holder = gw.client.app.state.gateway.holder
    gw.client.blocking_portal.call(holder.refresh)


def _ready(make_gateway, handler=chat_any, **kwargs) -> tuple[Harness, str]:  # type: ignore[no-untyped-def]
    gw: Harness = make_gateway(handler, **kwargs)
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    return gw, key


def test_a_gateway_without_its_configuration_says_503_not_that_the_key_is_bad(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    holder = gw.client.app.state.gateway.holder
    gw.client.blocking_portal.call(holder.close)  # no polling: it would load the snapshot again
    holder.current = Snapshot.empty()  # as when starting, or when the store lost it
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert_openai_error(response, 503, "gateway_starting")
    assert response.headers["retry-after"] == "1"
    health = gw.client.get("/health")
    assert health.status_code == 503
    # The store answered: it holds no snapshot, it is not unreachable.
    assert (health.json()["status"], health.json()["snapshot_store_reachable"]) == (
        "starting",
        True,
    )
    assert gw.upstream == []


def test_an_engine_counting_more_cached_tokens_than_prompted_is_metered_at_the_prompt(
    make_gateway,
) -> None:
    def miscounting(request: httpx.Request) -> httpx.Response:
        answer = json.loads(chat_any(request).content)
        answer["usage"]["prompt_tokens_details"]["cached_tokens"] = 40  # of 21 prompted
        return httpx.Response(200, json=answer)

    gw, key = _ready(make_gateway, miscounting)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
    [record] = gw.drain_usage()
    assert (record.prompt_tokens, record.cached_tokens) == (21, 21)


def test_chat_completion_returns_usage_and_records_one_event(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
    sent = json.loads(gw.upstream[0].content)
    assert sent["model"] == "llama-8b-served"
    [record] = gw.drain_usage()
    assert (record.prompt_tokens, record.cached_tokens, record.completion_tokens) == (21, 16, 3)
    assert record.status == 200 and record.alias == "llama" and record.tier == "gold"
    assert record.ttft_slo_ms == 500  # gold's, as served: judged by it even if gold's changes
    assert record.request_id == response.headers["x-request-id"]
    assert int(response.headers["openai-processing-ms"]) >= 0  # as OpenAI's answers carry it
    assert record.pool in {"h100-eu", "l40s-us"} and record.endpoint is not None


def test_the_gateway_ids_each_request_itself_and_echoes_the_callers_id_beside_it(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    ids = []
    for header in ("x-request-id", "x-request-id", "x-client-request-id"):
        response = gw.client.post(
            "/v1/chat/completions", json=CHAT, headers={**auth(key), header: "abc-123"}
        )
        assert response.status_code == 200
        assert response.headers["x-client-request-id"] == "abc-123"
        ids.append(response.headers["x-request-id"])
    # The gateway's own id: sent to the engine and the ledger's key, one per request, so a
    # caller reusing its id still has every request metered.
    assert len(set(ids)) == 3 and "abc-123" not in ids
    assert [sent.headers["x-request-id"] for sent in gw.upstream] == ids
    assert sorted(record.request_id for record in gw.drain_usage()) == sorted(ids)
    # A malformed id of the caller's is not echoed; errors carry the ids too.
    response = gw.client.post(
        "/v1/chat/completions", json={"model": "nope"}, headers={**auth(key), "x-request-id": "a b"}
    )
    assert response.status_code == 400
    assert "x-client-request-id" not in response.headers
    assert response.headers["x-request-id"].startswith("req-")


def test_stream_forces_usage_upstream_and_strips_it_for_the_client(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    response = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth(key)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = sse_data(response.text)
    assert all(c["choices"] for c in chunks), "the usage-only chunk must not reach this client"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "hi there you"
    assert response.text.endswith("data: [DONE]\n\n")
    assert json.loads(gw.upstream[0].content)["stream_options"] == {"include_usage": True}
    [record] = gw.drain_usage()
    assert (record.prompt_tokens, record.completion_tokens, record.stream) == (21, 3, True)
    assert record.ttft_ms is not None


def test_stream_keeps_usage_chunk_when_client_asked(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse_data(gw.client.post("/v1/chat/completions", json=body, headers=auth(key)).text)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 21


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (
            b'{"model": "llama", "messages": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
            None,
            "invalid_json",
        ),
        (b"", None, "invalid_json"),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "model",
            "missing_required_parameter",
        ),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model", "invalid_type"),
        (b'{"model": "llama"}', "messages", "missing_required_parameter"),
        (b'{"model": "llama", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "llama", "messages": [{"content": "x"}]}', "messages[0]", "invalid_type"),
        (
            b'{"model": "llama", "messages": [{"role": "user"}], "max_tokens": 0}',
            "max_tokens",
            "invalid_value",
        ),
        (
            b'{"model": "llama", "messages": [{"role": "user"}], "stream": "yes"}',
            "stream",
            "invalid_type",
        ),
        (
            b'{"model": "llama", "messages": [{"role": "user"}], "stream": true,'
            b' "stream_options": {"include_usage": "yes"}}',
            "stream_options.include_usage",
            "invalid_type",
        ),
        # vLLM reads "8" and 8.0 as eight answers; the reservation would count one
        *(
            (b'{"model": "llama", "messages": [{"role": "user"}], "n": ' + n + b"}", "n", code)
            for n, code in (
                (b'"8"', "invalid_value"),
                (b"8.0", "invalid_value"),
                (b"true", "invalid_value"),
                (b"0", "invalid_value"),
                (b"129", "invalid_value"),
                (b"1" + b"0" * 30, "invalid_value"),
            )
        ),
    ],
)
def test_bad_bodies_get_400_in_openai_shape_and_never_reach_an_engine(
    make_gateway, body, param, code
) -> None:
    gw, key = _ready(make_gateway)
    response = gw.client.post(
        "/v1/chat/completions",
        content=body,
        headers={**auth(key), "content-type": "application/json"},
    )
    error = assert_openai_error(response, 400, code)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert gw.upstream == []


def test_a_null_stream_is_a_plain_answer_as_openai_takes_it(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    body = {**CHAT, "stream": None, "stream_options": None}
    response = gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"


def test_oversized_body_gets_413(make_gateway) -> None:
    gw, key = _ready(make_gateway, max_body=1024)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    response = gw.client.post("/v1/chat/completions", json=big, headers=auth(key))
    assert_openai_error(response, 413, "request_too_large")
    assert "(1,024 bytes)" in response.json()["error"]["message"]  # what would have fitted
    assert gw.upstream == []


def test_refused_connection_fails_over_to_another_endpoint(make_gateway) -> None:
    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.host == "engine-1":
            raise httpx.ConnectError("refused", request=request)
        return chat_any(request)

    gw, key = _ready(make_gateway, flaky)
    for _ in range(4):
        assert (
            gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
        )
    assert all(r.endpoint != "http://engine-1" for r in gw.drain_usage())


def test_no_engine_answering_gives_503_and_is_metered(make_gateway) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    gw, key = _ready(make_gateway, down)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert_openai_error(response, 503, "upstream_unavailable")
    assert response.headers["retry-after"] == "1"
    assert len(gw.upstream) == 3  # every endpoint of both pools was tried once
    [record] = gw.drain_usage()
    assert record.status == 503 and record.completion_tokens == 0


def test_engine_dying_mid_stream_ends_with_an_error_event_and_usage_is_kept(make_gateway) -> None:
    def dies(request: httpx.Request) -> httpx.Response:
        events = sse_events("llama-8b-served", True)
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=Chunks(events, fail_after=3)
        )

    gw, key = _ready(make_gateway, dies)
    response = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth(key)
    )
    chunks = sse_data(response.text)
    assert chunks[-1]["error"]["code"] == "upstream_error"
    [record] = gw.drain_usage()
    assert record.status == 502 and record.completion_tokens == 2


def test_a_stream_through_a_compressing_proxy_reaches_the_client_readable(make_gateway) -> None:
    """What fronts the engines may compress what the request accepts (an Envoy or nginx gzip
    filter); the gateway relays a stream's bytes as they come, so it must not accept it: it
    sent ``accept-encoding: gzip, deflate`` and relayed gzip to a client told nothing of it."""

    def compressing(request: httpx.Request) -> httpx.Response:
        events = b"".join(sse_events("llama-8b-served", True))
        headers = {"content-type": "text/event-stream"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"], events = "gzip", gzip.compress(events)
        return httpx.Response(200, headers=headers, stream=Chunks([events]))

    gw, key = _ready(make_gateway, compressing)
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
    assert response.text.endswith("data: [DONE]\n\n")
    assert sse_data(response.text)[-1]["usage"]["completion_tokens"] == 3
    [record] = gw.drain_usage()
    assert (record.status, record.completion_tokens) == (200, 3)


@pytest.mark.parametrize(
    ("status", "answer", "expected"),
    [
        (  # vLLM's shape: its message and param kept, OpenAI's type and code
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 2048 tokens.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                }
            },
            {
                "message": "This model's maximum context length is 2048 tokens.",
                "type": "invalid_request_error",
                "param": None,
                "code": "context_length_exceeded",
            },
        ),
        (  # vLLM 0.32's word for a prompt that fills the window: its clamped maximum is 0
            400,
            {
                "error": {
                    "message": "max_tokens must be at least 1, got 0. "
                    "(parameter=max_tokens, value=0)",
                    "type": "BadRequestError",
                    "param": "max_tokens",
                    "code": 400,
                }
            },
            {
                "message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "context_length_exceeded",
            },
        ),
        (  # older vLLM: the fields at the top level
            400,
            {"object": "error", "message": "bad top_p", "type": "BadRequestError", "code": 400,
             "param": "top_p"},
            {"message": "bad top_p", "type": "invalid_request_error", "param": "top_p",
             "code": None},
        ),
        (  # FastAPI's validation error, before vLLM's own handlers
            422,
            {"detail": [{"loc": ["body", "top_k"], "msg": "Input should be a valid integer"}]},
            {"message": '[{"loc":["body","top_k"],"msg":"Input should be a valid integer"}]',
             "type": "invalid_request_error", "param": None, "code": None},
        ),
        (  # not JSON at all
            422,
            "unprocessable",
            {"message": "unprocessable", "type": "invalid_request_error", "param": None,
             "code": None},
        ),
    ],
)  # fmt: skip
def test_an_engine_4xx_keeps_its_status_and_message_in_openai_shape(
    make_gateway, status, answer, expected
) -> None:
    def rejects(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, str):
            return httpx.Response(status, text=answer)
        return httpx.Response(status, json=answer)

    gw, key = _ready(make_gateway, rejects)
    response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert response.status_code == status
    assert response.json() == {"error": expected}


def test_engine_5xx_becomes_502(make_gateway) -> None:
    gw, key = _ready(make_gateway, lambda request: httpx.Response(500, text="boom"))
    assert_openai_error(
        gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)), 502, "upstream_error"
    )


def test_residency_keeps_a_regional_tenant_in_its_region(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key(TENANT_B)
    gw.world.publish()
    _wait_for_version(gw)
    for _ in range(6):
        assert (
            gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).status_code == 200
        )
    assert {r.region for r in gw.drain_usage()} == {"eu-west"}


def test_unknown_path_is_404_in_openai_shape(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    unknown = assert_openai_error(gw.client.get("/v1/nope", headers=auth(key)), 404, "unknown_url")
    assert unknown["message"].startswith("Unknown request URL: GET /v1/nope.")
    responses = gw.client.post("/v1/responses", json={}, headers=auth(key))
    assert (
        "serves POST /v1/chat/completions"
        in assert_openai_error(responses, 404, "unknown_url")["message"]
    )  # a client calling an endpoint this gateway lacks learns which it has


def test_wrong_method_is_405_in_openai_shape_with_the_allowed_one(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    answer = gw.client.get("/v1/chat/completions", headers=auth(key))
    assert_openai_error(answer, 405, "method_not_allowed")
    assert "POST" in answer.headers["allow"]


def test_head_is_answered_as_get_without_its_body(make_gateway) -> None:
    """RFC 9110: a server answers HEAD wherever it answers GET; an uptime monitor probing
    ``HEAD /health`` (several do by default) read the gateway's 405 as down."""
    gw, key = _ready(make_gateway)
    for path in ("/health", "/livez", "/v1/models", "/v1/models/llama"):
        got = gw.client.get(path, headers=auth(key))
        head = gw.client.head(path, headers=auth(key))
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == got.headers["content-type"]
        if path == "/health":  # its engines' ages change between two answers, and their digits
            assert int(head.headers["content-length"]) > 0
        else:
            assert head.headers["content-length"] == got.headers["content-length"] != "0"
    assert gw.client.head("/v1/models").status_code == 401  # a key all the same
    refused = gw.client.head("/v1/chat/completions", headers=auth(key))
    assert refused.status_code == 405 and "HEAD" not in refused.headers["allow"]
    put = gw.client.put("/v1/models", headers=auth(key))
    assert put.status_code == 405 and put.headers["allow"] == "GET, HEAD, OPTIONS"


def test_a_completion_scoring_its_prompt_with_echo_and_max_tokens_0_goes_through(
    make_gateway,
) -> None:
    """The legacy way to score a prompt (its log-probabilities, nothing generated), which
    vLLM takes; without echo a maximum of 0 is still refused."""
    gw, key = _ready(make_gateway)
    scoring = {"model": "llama", "prompt": "Paris is", "max_tokens": 0, "echo": True, "logprobs": 1}
    response = gw.client.post("/v1/completions", json=scoring, headers=auth(key))
    assert response.status_code == 200, response.text
    assert json.loads(gw.upstream[-1].content)["max_tokens"] == 0
    plain = {**scoring, "echo": False}
    refused = gw.client.post("/v1/completions", json=plain, headers=auth(key))
    assert assert_openai_error(refused, 400, "invalid_value")["param"] == "max_tokens"


def test_a_gateway_holding_its_limit_of_unsent_usage_refuses_what_it_could_not_meter(
    make_gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis away for long: the events held in memory grew until the process died with them."""
    gw, key = _ready(make_gateway, settings=GatewaySettings(max_held_usage_events=3))
    emitter = gw.client.app.state.gateway.emitter
    monkeypatch.setattr(emitter, "held", 3)  # as a Redis emitter counts them
    refused = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert_openai_error(refused, 503, "usage_unavailable")
    assert refused.headers["retry-after"] == "1" and gw.upstream == []
    monkeypatch.setattr(emitter, "held", 2)  # the stream took some back
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key)).is_success
