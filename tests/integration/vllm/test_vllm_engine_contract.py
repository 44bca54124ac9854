"""vLLM itself, no gateway: answers the simulated engine must give alike
(tests/unit/engines/test_sim_vllm_contract.py runs the same cases on it)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from support.engine_contract import (
    ANSWER_TOKENS,
    CHAT_MESSAGE_FIELDS,
    COMPLETION_ACCEPTED,
    COMPLETION_LOGPROBS,
    COMPLETION_REFUSED,
    CONTINUOUS_USAGE_CASES,
    ECHO_CASES,
    MULTI_ANSWER_CASES,
    STOP_CASES,
    STOP_MAX_TOKENS,
    check_completion_logprobs,
    check_context_answer,
    check_continuous_usage,
    check_echo,
    check_echo_stream,
    check_multi_answer,
    check_multi_answer_stream,
    check_prompt_window_refusal,
    check_stopped,
    context_window_cases,
    prompt_window_cases,
)
from support.vllm import VllmServer

MAX_MODEL_LEN = 2048
"""The tests' tiny model's window (scripts/vllm-env.sh); the first test checks it."""


def test_the_served_window_is_the_one_the_cases_assume(vllm_server: VllmServer) -> None:
    (card,) = httpx.get(f"{vllm_server.url}/v1/models", timeout=30.0).json()["data"]
    assert card["max_model_len"] == vllm_server.max_model_len == MAX_MODEL_LEN


@pytest.mark.parametrize(("kind", "fields", "param"), context_window_cases(MAX_MODEL_LEN))
def test_answer_maximums_over_the_context_are_refused_and_within_it_clamped(
    vllm_server: VllmServer, kind: str, fields: dict[str, Any], param: str | None
) -> None:
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    body = {"model": vllm_server.model_name, **fields}
    response = httpx.post(f"{vllm_server.url}{path}", json=body, timeout=120.0)
    check_context_answer(response.status_code, response.json(), param, MAX_MODEL_LEN)


@pytest.mark.parametrize(("kind", "fields", "alone"), MULTI_ANSWER_CASES)
def test_n_answers_and_lists_of_prompts(
    vllm_server: VllmServer, kind: str, fields: dict[str, Any], alone: list[dict[str, Any]]
) -> None:
    url = vllm_server.url + ("/v1/chat/completions" if kind == "chat" else "/v1/completions")
    common = {"model": vllm_server.model_name, "max_tokens": ANSWER_TOKENS, "ignore_eos": True}
    singles = [httpx.post(url, json={**common, **one}, timeout=120.0).json() for one in alone]
    full = httpx.post(url, json={**common, **fields}, timeout=120.0)
    assert full.status_code == 200, full.text
    check_multi_answer(kind, fields, full.json(), singles)

    stream = {**common, **fields, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url, json=stream, timeout=120.0) as response:
        lines = [line[len("data: ") :] for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    check_multi_answer_stream(kind, fields, [json.loads(line) for line in lines[:-1]])


@pytest.mark.parametrize("fields", ECHO_CASES)
def test_echo_answers_start_with_their_prompt_and_max_tokens_0_scores_it(
    vllm_server: VllmServer, fields: dict[str, Any]
) -> None:
    url = f"{vllm_server.url}/v1/completions"
    body = {"model": vllm_server.model_name, "echo": True, **fields}
    full = httpx.post(url, json=body, timeout=120.0)
    assert full.status_code == 200, full.text
    check_echo(fields, full.json())
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120.0) as response:
        lines = [line[len("data: ") :] for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    check_echo_stream(fields, [json.loads(line) for line in lines[:-1]])


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize(("kind", "fields"), CONTINUOUS_USAGE_CASES)
def test_continuous_usage_stats_put_usage_in_every_chunk(
    vllm_server: VllmServer, kind: str, fields: dict[str, Any], include_usage: bool
) -> None:
    url = vllm_server.url + ("/v1/chat/completions" if kind == "chat" else "/v1/completions")
    options = {"include_usage": include_usage, "continuous_usage_stats": True}
    body = {"model": vllm_server.model_name, "max_tokens": ANSWER_TOKENS, "ignore_eos": True}
    stream = {**body, **fields, "stream": True, "stream_options": options}
    with httpx.stream("POST", url, json=stream, timeout=120.0) as response:
        lines = [line[len("data: ") :] for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    check_continuous_usage(
        kind, [json.loads(line) for line in lines[:-1]], include_usage=include_usage
    )


@pytest.mark.parametrize(("kind", "fields", "param", "message"), prompt_window_cases(MAX_MODEL_LEN))
def test_prompts_leaving_no_room_for_an_answer_are_refused(
    vllm_server: VllmServer, kind: str, fields: dict[str, Any], param: str, message: str
) -> None:
    path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
    body = {"model": vllm_server.model_name, **fields}
    response = httpx.post(f"{vllm_server.url}{path}", json=body, timeout=120.0)
    check_prompt_window_refusal(
        response.status_code, response.json(), param, message, MAX_MODEL_LEN
    )


@pytest.mark.parametrize(("bad", "param", "message"), COMPLETION_REFUSED)
def test_completion_bodies_it_refuses(
    vllm_server: VllmServer, bad: dict[str, Any], param: str, message: str
) -> None:
    body = {"model": vllm_server.model_name, "prompt": "hi there", "max_tokens": 2, **bad}
    response = httpx.post(f"{vllm_server.url}/v1/completions", json=body, timeout=120.0)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, 400)
    assert message in error["message"]


@pytest.mark.parametrize(("fields", "listed"), COMPLETION_LOGPROBS)
def test_completion_logprobs_as_it_reads_them(
    vllm_server: VllmServer, fields: dict[str, Any], listed: int
) -> None:
    body = {"model": vllm_server.model_name, "prompt": "hi there", "max_tokens": 2, **fields}
    response = httpx.post(f"{vllm_server.url}/v1/completions", json=body, timeout=120.0)
    assert response.status_code == 200, response.text
    check_completion_logprobs(response.json()["choices"][0], listed)


def test_a_chat_answer_has_these_message_fields(vllm_server: VllmServer) -> None:
    body = {
        "model": vllm_server.model_name,
        "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 2,
    }
    response = httpx.post(f"{vllm_server.url}/v1/chat/completions", json=body, timeout=120.0)
    assert set(response.json()["choices"][0]["message"]) == CHAT_MESSAGE_FIELDS


def test_completion_bodies_it_accepts(vllm_server: VllmServer) -> None:
    for fine in COMPLETION_ACCEPTED:
        body = {"model": vllm_server.model_name, "prompt": "hi there", "max_tokens": 2, **fine}
        response = httpx.post(f"{vllm_server.url}/v1/completions", json=body, timeout=120.0)
        assert response.status_code == 200, (fine, response.text)


@pytest.mark.parametrize(("kind", "fields"), STOP_CASES)
def test_an_answer_ends_before_its_stop_string(
    vllm_server: VllmServer, kind: str, fields: dict[str, Any]
) -> None:
    url = vllm_server.url + ("/v1/chat/completions" if kind == "chat" else "/v1/completions")
    body = {
        "model": vllm_server.model_name,
        "max_tokens": STOP_MAX_TOKENS,
        "ignore_eos": True,
        **fields,
    }
    full = httpx.post(url, json=body, timeout=120.0).json()
    (choice,) = full["choices"]
    text = choice["message"]["content"] if kind == "chat" else choice["text"]
    usage = full["usage"]["completion_tokens"]
    check_stopped(text, choice["finish_reason"], choice["stop_reason"], usage)

    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url, json=stream, timeout=120.0) as response:
        lines = [line[len("data: ") :] for line in response.iter_lines() if line]
    *chunks, last = [json.loads(line) for line in lines[:-1]]
    choices = [chunk["choices"][0] for chunk in chunks]
    streamed = "".join(
        c["delta"].get("content", "") if kind == "chat" else c["text"] for c in choices
    )
    final = choices[-1]
    tokens = last["usage"]["completion_tokens"]
    check_stopped(streamed, final["finish_reason"], final["stop_reason"], tokens)
