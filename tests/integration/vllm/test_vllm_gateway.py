"""The gateway in front of real vLLM: the OpenAI surface, usage and ``cached_tokens`` pass
through as vLLM sends them, and the gateway meters what vLLM counted.

Embeddings are not covered here: the tiny model is a causal LM, and a vLLM server serves one
runner, so it has no ``/v1/embeddings`` (see docs/real-vllm.md).
"""

from __future__ import annotations

import json

import pytest

from support.engine_contract import ACCEPTED, REFUSED, token_logprobs
from support.vllm import POOL, Gateway, VllmServer, unique_prompt

MAX_TOKENS = 8
# The random-weight model may sample EOS at any step: vLLM's ignore_eos makes lengths exact.
EXACT = {"max_tokens": MAX_TOKENS, "ignore_eos": True}


def _chat(content: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], **EXACT}


def test_chat_passes_through_with_usage_and_is_metered(gateway: Gateway) -> None:
    response = gateway.post("/v1/chat/completions", _chat("hello there"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny-llama"  # the served model name, as vLLM answers
    assert body["choices"][0]["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] == MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + MAX_TOKENS
    assert response.headers["x-trunkline-pool"] == POOL
    (record,) = gateway.usage_records()
    assert (record.status, record.pool, record.stream) == (200, POOL, False)
    assert (record.prompt_tokens, record.completion_tokens) == (
        usage["prompt_tokens"],
        MAX_TOKENS,
    )


def test_stream_drops_the_usage_chunk_the_client_did_not_ask_for(gateway: Gateway) -> None:
    response, payloads = gateway.stream("/v1/chat/completions", _chat("stream to me"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks), "a usage-only chunk reached the client"
    assert not any(chunk.get("usage") for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # The gateway forced include_usage upstream, so it still metered vLLM's exact counts.
    (record,) = gateway.usage_records()
    assert (record.status, record.stream, record.completion_tokens) == (200, True, MAX_TOKENS)
    assert record.prompt_tokens > 0


def test_stream_keeps_the_usage_chunk_when_asked(gateway: Gateway) -> None:
    body = {**_chat("count my tokens"), "stream_options": {"include_usage": True}}
    response, payloads = gateway.stream("/v1/chat/completions", body)

    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    final = json.loads(payloads[-2])
    assert final["choices"] == []
    assert final["usage"]["completion_tokens"] == MAX_TOKENS
    assert final["usage"]["prompt_tokens"] > 0
    (record,) = gateway.usage_records()
    assert record.prompt_tokens == final["usage"]["prompt_tokens"]


def test_repeated_long_prompt_reports_cached_tokens(
    gateway: Gateway, vllm_server: VllmServer
) -> None:
    prompt = unique_prompt(400)  # ≈ 600+ tokens: many full blocks
    first = gateway.post("/v1/chat/completions", _chat(prompt))
    body = {**_chat(prompt), "stream_options": {"include_usage": True}}
    response, payloads = gateway.stream("/v1/chat/completions", body)

    assert first.status_code == 200, first.text
    first_usage = first.json()["usage"]
    assert first_usage["prompt_tokens"] > 8 * vllm_server.block_size
    assert first_usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert response.status_code == 200
    usage = json.loads(payloads[-2])["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    # vLLM caches full blocks only, and always recomputes at least the last prompt token.
    assert cached > 0
    assert cached % vllm_server.block_size == 0
    assert usage["prompt_tokens"] - vllm_server.block_size <= cached < usage["prompt_tokens"]
    records = gateway.usage_records()
    assert [r.cached_tokens for r in records] == [0, cached]


def test_completions_pass_through(gateway: Gateway) -> None:
    response = gateway.post("/v1/completions", {"prompt": "Once upon a time", **EXACT})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] == MAX_TOKENS


def test_prompt_over_max_model_len_is_vllms_400_in_openai_shape(
    gateway: Gateway, vllm_server: VllmServer
) -> None:
    prompt = unique_prompt(3 * vllm_server.max_model_len // 2)  # > 1.5 tokens per word

    response = gateway.post("/v1/completions", {"prompt": prompt, "max_tokens": 4})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert f"maximum context length is {vllm_server.max_model_len}" in error["message"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    (record,) = gateway.usage_records()
    assert (record.status, record.error_code) == (400, "upstream_rejected")


def test_bodies_vllm_refuses_are_its_400_in_openai_shape(gateway: Gateway) -> None:
    """The simulated engine answers these alike (tests/unit/engines/test_sim_vllm_contract.py)."""
    for bad, param, message in REFUSED:
        response = gateway.post("/v1/chat/completions", {**_chat("hello"), **bad})
        assert response.status_code == 400, (bad, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert (error["param"], message in error["message"]) == (param, True), error
    for fine in ACCEPTED:
        assert gateway.post("/v1/chat/completions", {**_chat("hi"), **fine}).status_code == 200


@pytest.mark.parametrize(
    ("kind", "path", "asked", "most"),
    [
        ("chat", "/v1/chat/completions", {"logprobs": True, "top_logprobs": 3}, 3),
        ("completion", "/v1/completions", {"logprobs": 2}, 3),  # and the sampled token
    ],
)
def test_logprobs_pass_through_in_vllms_shape(
    gateway: Gateway, kind: str, path: str, asked: dict[str, object], most: int
) -> None:
    """The simulated engine gives them in this shape (tests/unit/engines/test_sim_server.py):
    what a cascade's logprob check reads."""
    prompt = _chat("how sure are you") if kind == "chat" else {"prompt": "how sure", **EXACT}
    body = {**prompt, **asked}

    plain = gateway.post(path, body)
    response, payloads = gateway.stream(path, body)

    assert plain.status_code == 200, plain.text
    per_token = token_logprobs(kind, [plain.json()["choices"][0]["logprobs"]])
    assert len(per_token) == MAX_TOKENS
    assert all(logprob <= 0 and 1 <= len(top) <= most for logprob, top in per_token)
    assert response.status_code == 200
    chunks = [json.loads(p) for p in payloads[:-1]]
    parts = [c["choices"][0]["logprobs"] for c in chunks if c["choices"]]
    assert len(token_logprobs(kind, [p for p in parts if p is not None])) == MAX_TOKENS
