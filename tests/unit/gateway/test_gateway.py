"""The gateway as an OpenAI client sees it, with scripted engines behind it."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import msgspec
import pytest
from tests.unit.gateway.conftest import TENANT_A, TENANT_B, Harness
from tests.unit.gateway.upstreams import Chunks, chat_any, sse_events

from trunkline.errors import Unauthenticated
from trunkline.settings import GatewaySettings
from trunkline.snapshot import AliasEntry, CascadeEntry, Snapshot

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


def test_models_lists_only_what_the_key_may_use(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key()
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    gw.world.publish()
    _wait_for_version(gw)
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(key)).json()["data"]]
    assert ids == ["bge", "llama"]
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(narrow)).json()["data"]]
    assert ids == ["bge"]


def test_a_models_created_is_its_alias_and_not_the_last_configuration_change(
    make_gateway,
) -> None:  # type: ignore[no-untyped-def]
    """It was the snapshot's publication time: it changed whenever any tenant made a key, and
    told every tenant when that was."""
    gw: Harness = make_gateway(chat_any)
    gw.world.aliases["llama"] = msgspec.structs.replace(
        gw.world.aliases["llama"], created=1_700_000_000
    )
    key = gw.world.add_key()
    gw.world.publish()
    _wait_for_version(gw)
    before = gw.client.get("/v1/models/llama", headers=auth(key)).json()["created"]
    gw.world.add_key(TENANT_B)
    gw.world.publish()
    _wait_for_version(gw)
    listed = gw.client.get("/v1/models", headers=auth(key)).json()["data"]
    assert before == 1_700_000_000
    assert [m["created"] for m in listed if m["id"] == "llama"] == [before]


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


def test_unknown_and_unentitled_models_are_alike_404_and_a_key_narrowing_is_403(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    r = gw.client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=auth(key))
    unknown = assert_openai_error(r, 404, "model_not_found")
    assert unknown["param"] == "model"
    r = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": "secret-model"}, headers=auth(key)
    )
    # another tenant's alias is refused as if it did not exist: the refusal does not reveal it
    unentitled = assert_openai_error(r, 404, "model_not_found")
    assert unentitled["message"] == unknown["message"].replace("gpt-9", "secret-model")
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    gw.world.publish()
    _wait_for_version(gw)
    assert_openai_error(
        gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(narrow)),
        403,
        "model_not_allowed",
    )
    r = gw.client.post("/v1/embeddings", json={"model": "llama", "input": "x"}, headers=auth(key))
    assert_openai_error(r, 400, "model_not_supported")
    assert gw.upstream == []


def test_a_model_placed_only_for_other_tiers_or_regions_is_403_and_not_listed(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    for name in ("h100-eu", "l40s-us"):  # every pool of llama kept for another tier
        gw.world.pools[name] = msgspec.structs.replace(gw.world.pools[name], tiers=("platinum",))
    gw.world.publish()
    _wait_for_version(gw)
    r = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    error = assert_openai_error(r, 403, "no_pool_for_tenant")
    assert "retry-after" not in r.headers  # not a condition that clears by waiting
    assert (error["param"], "gold" in error["message"]) == ("model", True)
    ids = [m["id"] for m in gw.client.get("/v1/models", headers=auth(key)).json()["data"]]
    assert ids == ["bge"]

    # One pool open to gold again, but empty: that may clear (scaled to zero), so 503.
    gw.world.pools["l40s-us"] = msgspec.structs.replace(
        gw.world.pools["l40s-us"], tiers=("gold",), endpoints=()
    )
    gw.world.publish()
    _wait_for_version(gw)
    r = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    assert_openai_error(r, 503, "no_endpoint")
    assert gw.upstream == []


def test_a_model_s_served_name_from_its_answers_can_be_called_back(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    answered = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    served = answered.json()["model"]
    assert served == "llama-8b-served"  # answers carry the served name (the engine's)
    again = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(key)
    )
    assert again.status_code == 200, again.text
    assert json.loads(gw.upstream[-1].content)["model"] == served
    assert [record.alias for record in gw.drain_usage()] == ["llama", "llama"]  # metered alike
    # another tenant's alias bearing that name changes nothing for this one
    gw.world.aliases[served] = AliasEntry(served, "other-served", "chat", ("h100-eu",))
    gw.world.publish()
    _wait_for_version(gw)
    still = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(key)
    )
    assert still.status_code == 200 and json.loads(gw.upstream[-1].content)["model"] == served
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))  # the tenant's, but not this key's
    gw.world.publish()
    _wait_for_version(gw)
    narrowed = gw.client.post(
        "/v1/chat/completions", json={**CHAT, "model": served}, headers=auth(narrow)
    )
    assert_openai_error(narrowed, 403, "model_not_allowed")


@pytest.mark.parametrize("model", ["small-served", "big-served"])
def test_a_cascade_s_models_are_not_called_by_served_name_through_the_cascade(
    make_gateway, model
) -> None:
    gw, key = _ready(make_gateway)
    gw.world.aliases["auto"] = AliasEntry(
        "auto", "small-served", "chat", ("h100-eu",), CascadeEntry("big-served", ("h100-eu",))
    )
    gw.world.tenants[TENANT_A] = msgspec.structs.replace(
        gw.world.tenants[TENANT_A], aliases=frozenset({"llama", "bge", "auto"})
    )
    gw.world.publish()
    _wait_for_version(gw)
    # entitled to the cascade alone: its models are reached only through its checks
    r = gw.client.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=auth(key))
    assert_openai_error(r, 404, "model_not_found")


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic abc", "Bearer sk-not-ours", "Bearer tlk_AAAAAAAAAAAA_" + "B" * 40],
)
def test_missing_or_malformed_keys_get_401(make_gateway, header) -> None:
    gw, _key = _ready(make_gateway)
    headers = {} if header is None else {"Authorization": header}
    assert_openai_error(
        gw.client.post("/v1/chat/completions", json=CHAT, headers=headers), 401, "invalid_api_key"
    )
    assert_openai_error(gw.client.get("/v1/models", headers=headers), 401, "invalid_api_key")


def test_an_azure_client_s_api_key_header_is_taken_when_there_is_no_authorization(
    make_gateway,
) -> None:
    gw, key = _ready(make_gateway)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers={"api-key": key}).is_success
    assert gw.client.get("/v1/models", headers={"api-key": key}).is_success
    wrong = {"api-key": key[:-1] + ("A" if key[-1] != "A" else "B")}
    assert_openai_error(gw.client.get("/v1/models", headers=wrong), 401, "invalid_api_key")
    # an Authorization header, when sent, is the credential: a bad one is not rescued by api-key
    both = {"Authorization": "Basic abc", "api-key": key}
    assert_openai_error(gw.client.get("/v1/models", headers=both), 401, "invalid_api_key")


def test_tampered_secret_is_refused(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_openai_error(gw.client.get("/v1/models", headers=auth(tampered)), 401, "invalid_api_key")


def test_revoked_key_is_refused_after_the_next_snapshot(make_gateway) -> None:
    gw, key = _ready(make_gateway)
    assert gw.client.get("/v1/models", headers=auth(key)).status_code == 200
    key_id = key.split("_")[1]
    del gw.world.keys[key_id]
    gw.world.publish()
    _wait_for_version(gw)
    assert_openai_error(gw.client.get("/v1/models", headers=auth(key)), 401, "invalid_api_key")


def test_expired_key_is_refused_without_a_new_snapshot(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key(expires_at=time.time() - 1)
    gw.world.publish()
    _wait_for_version(gw)
    error = assert_openai_error(
        gw.client.get("/v1/models", headers=auth(key)), 401, "invalid_api_key"
    )
    assert "expired" in error["message"]


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


def test_a_model_is_retrieved_only_by_a_key_that_may_use_it(make_gateway) -> None:
    gw: Harness = make_gateway(chat_any)
    key = gw.world.add_key()
    narrow = gw.world.add_key(allowed=frozenset({"bge"}))
    globex = gw.world.add_key(TENANT_B)
    gw.world.publish()
    _wait_for_version(gw)
    listed = gw.client.get("/v1/models", headers=auth(key)).json()["data"]
    one = gw.client.get("/v1/models/llama", headers=auth(key))
    assert one.status_code == 200
    assert one.json() == next(m for m in listed if m["id"] == "llama")
    # Another tenant's model, a model the key may not use and no model at all look the same.
    for caller, model in ((key, "secret-model"), (narrow, "llama"), (key, "nope/x")):
        error = assert_openai_error(
            gw.client.get(f"/v1/models/{model}", headers=auth(caller)), 404, "model_not_found"
        )
        assert error["param"] == "model" and model in error["message"]
    assert gw.client.get("/v1/models/secret-model", headers=auth(globex)).status_code == 200
    assert_openai_error(gw.client.get("/v1/models/llama"), 401, "invalid_api_key")


def test_a_request_is_served_by_the_configuration_current_when_its_body_came(
    make_gateway,
) -> None:
    """The key is checked when the headers come; a slow body outlived the key's revocation
    and the tenant's move to other regions, served as if neither had happened."""
    gw, key = _ready(make_gateway)
    globex = gw.world.add_key(TENANT_B)  # regions: eu-west
    gw.world.publish()
    _wait_for_version(gw)
    service = gw.client.app.state.gateway
    checked = {k: service.authenticate(f"Bearer {k}") for k in (key, globex)}
    del gw.world.keys[key.split("_")[1]]  # revoked while its body was on its way
    gw.world.tenants[TENANT_B] = msgspec.structs.replace(
        gw.world.tenants[TENANT_B], regions=("us-east",)
    )
    gw.world.publish()
    _wait_for_version(gw)
    raw = json.dumps(CHAT).encode()

    async def handle(principal: object) -> object:
        return await service.handle("chat", raw, principal, "req-slow")

    with pytest.raises(Unauthenticated):
        gw.client.blocking_portal.call(handle, checked[key])
    reply = gw.client.blocking_portal.call(handle, checked[globex])
    assert reply.headers["x-trunkline-pool"] == "l40s-us"  # its regions now, not then


def test_a_body_that_does_not_arrive_in_time_is_a_408_and_reaches_no_engine(
    make_gateway,
) -> None:
    """A client trickling its body in held a connection, and its key's check, for ever."""
    gw, key = _ready(make_gateway, settings=GatewaySettings(body_timeout_s=0.05))
    sent: list[dict] = []  # type: ignore[type-arg]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": None,
        "headers": [(b"authorization", f"Bearer {key}".encode()), (b"content-length", b"1000"),
                    (b"content-type", b"application/json")],
    }  # fmt: skip

    async def trickle() -> None:
        parts = iter([{"type": "http.request", "body": b'{"model": "ll', "more_body": True}])

        async def receive() -> dict:  # type: ignore[type-arg]
            part = next(parts, None)
            if part is None:
                await asyncio.Event().wait()  # the rest never comes
            return part  # type: ignore[return-value]

        async def send(message: dict) -> None:  # type: ignore[type-arg]
            sent.append(message)

        await gw.client.app(scope, receive, send)

    gw.client.blocking_portal.call(trickle)
    assert sent[0]["status"] == 408
    error = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["error"]
    assert error["code"] == "request_timeout" and gw.upstream == []


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
