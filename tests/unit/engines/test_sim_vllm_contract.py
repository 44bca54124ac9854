"""What the simulated engine answers as vLLM 0.32 does: the cases of
tests/support/engine_contract.py, which tests/integration/vllm sends to the real server."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.engines.helpers import sse_payloads

from support.engine_contract import (
    ACCEPTED,
    ANSWER_TOKENS,
    CHAT_MESSAGE_FIELDS,
    COMPLETION_ACCEPTED,
    COMPLETION_LOGPROBS,
    COMPLETION_REFUSED,
    CONTINUOUS_USAGE_CASES,
    ECHO_CASES,
    MULTI_ANSWER_CASES,
    REFUSED,
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
from unit.engines.sim_client import CHAT_PATH, COMPLETIONS_PATH, MESSAGES, MODEL, Sim


@pytest.mark.parametrize(("kind", "fields", "alone"), MULTI_ANSWER_CASES)
async def test_n_answers_and_lists_of_prompts_are_answered_like_vllm(
    sim: Sim, kind: str, fields: dict[str, Any], alone: list[dict[str, Any]]
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    path = CHAT_PATH if kind == "chat" else COMPLETIONS_PATH
    common = {"model": MODEL, "max_tokens": ANSWER_TOKENS, "ignore_eos": True}
    singles = [(await sim.client.post(path, json={**common, **one})).json() for one in alone]
    full = await sim.client.post(path, json={**common, **fields})
    assert full.status_code == 200, full.text
    check_multi_answer(kind, fields, full.json(), singles)
    texts = [c.get("text") or c.get("message", {}).get("content") for c in full.json()["choices"]]
    assert len(set(texts)) > 1, "the answers are sampled apart"

    stream = {**common, **fields, "stream": True, "stream_options": {"include_usage": True}}
    response = await sim.client.post(path, json=stream)
    *events, done = sse_payloads(response.text)
    assert done == "[DONE]"
    check_multi_answer_stream(kind, fields, events)


@pytest.mark.parametrize(("kind", "fields", "param"), context_window_cases(512))
async def test_answer_maximums_over_the_context_are_refused_and_within_it_clamped(
    sim: Sim, kind: str, fields: dict[str, Any], param: str | None
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    path = CHAT_PATH if kind == "chat" else COMPLETIONS_PATH
    response = await sim.client.post(path, json={"model": MODEL, **fields})
    check_context_answer(response.status_code, response.json(), param, 512)


@pytest.mark.parametrize(("bad", "param", "message"), REFUSED)
async def test_bodies_vllm_refuses_get_its_errors(
    sim: Sim, bad: dict[str, Any], param: str | None, message: str
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, **bad}
    response = await sim.client.post(CHAT_PATH, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, 400)
    assert message in error["message"]
    # vLLM's request-model validation says "Bad Request", its own checks "BadRequestError".
    expected = "Bad Request" if param and param.startswith("body.") else "BadRequestError"
    assert error["type"] == expected
    assert sim.app.core.counters.prefix_cache_queries == 0


async def test_bodies_vllm_accepts_are_accepted(sim: Sim) -> None:
    for fine in ACCEPTED:
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, **fine}
        assert (await sim.client.post(CHAT_PATH, json=body)).status_code == 200, fine


@pytest.mark.parametrize("fields", ECHO_CASES)
async def test_echo_answers_start_with_their_prompt_and_max_tokens_0_scores_it(
    sim: Sim, fields: dict[str, Any]
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    body = {"model": MODEL, "echo": True, **fields}
    full = await sim.client.post(COMPLETIONS_PATH, json=body)
    assert full.status_code == 200, full.text
    check_echo(fields, full.json())
    response = await sim.client.post(COMPLETIONS_PATH, json={**body, "stream": True})
    *events, done = sse_payloads(response.text)
    assert done == "[DONE]"
    check_echo_stream(fields, events)


@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize(("kind", "fields"), CONTINUOUS_USAGE_CASES)
async def test_continuous_usage_stats_put_usage_in_every_chunk_as_vllm_does(
    sim: Sim, kind: str, fields: dict[str, Any], include_usage: bool
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    path = CHAT_PATH if kind == "chat" else COMPLETIONS_PATH
    options = {"include_usage": include_usage, "continuous_usage_stats": True}
    body = {"model": MODEL, "max_tokens": ANSWER_TOKENS, "ignore_eos": True, **fields}
    response = await sim.client.post(path, json={**body, "stream": True, "stream_options": options})
    *events, done = sse_payloads(response.text)
    assert done == "[DONE]"
    check_continuous_usage(kind, events, include_usage=include_usage)


@pytest.mark.parametrize(("kind", "fields", "param", "message"), prompt_window_cases(512))
async def test_prompts_leaving_no_room_for_an_answer_are_refused_as_vllm_does(
    sim: Sim, kind: str, fields: dict[str, Any], param: str, message: str
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    path = CHAT_PATH if kind == "chat" else COMPLETIONS_PATH
    response = await sim.client.post(path, json={"model": MODEL, **fields})
    check_prompt_window_refusal(response.status_code, response.json(), param, message, 512)


@pytest.mark.parametrize(("bad", "param", "message"), COMPLETION_REFUSED)
async def test_completion_bodies_vllm_refuses_get_its_errors(
    sim: Sim, bad: dict[str, Any], param: str, message: str
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    body = {"model": MODEL, "prompt": "hi there", "max_tokens": 2, **bad}
    response = await sim.client.post(COMPLETIONS_PATH, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, 400)
    assert message in error["message"]


@pytest.mark.parametrize(("fields", "listed"), COMPLETION_LOGPROBS)
async def test_completion_logprobs_are_read_as_vllm_reads_them(
    sim: Sim, fields: dict[str, Any], listed: int
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    body = {"model": MODEL, "prompt": "hi there", "max_tokens": 2, **fields}
    response = await sim.client.post(COMPLETIONS_PATH, json=body)
    assert response.status_code == 200, response.text
    check_completion_logprobs(response.json()["choices"][0], listed)


async def test_a_chat_answer_has_the_message_fields_of_vllm(sim: Sim) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    response = await sim.chat(max_tokens=2)
    assert set(response.json()["choices"][0]["message"]) == CHAT_MESSAGE_FIELDS


async def test_completion_bodies_vllm_accepts_are_accepted(sim: Sim) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    for fine in COMPLETION_ACCEPTED:
        body = {"model": MODEL, "prompt": "hi there", "max_tokens": 2, **fine}
        assert (await sim.client.post(COMPLETIONS_PATH, json=body)).status_code == 200, fine


@pytest.mark.parametrize(("kind", "fields"), STOP_CASES)
async def test_an_answer_ends_before_its_stop_string_as_vllms_do(
    sim: Sim, kind: str, fields: dict[str, Any]
) -> None:
    """As vLLM 0.32 (tests/integration/vllm/test_vllm_engine_contract.py)."""
    path = CHAT_PATH if kind == "chat" else COMPLETIONS_PATH
    body = {"model": MODEL, "max_tokens": STOP_MAX_TOKENS, "ignore_eos": True, **fields}
    full = (await sim.client.post(path, json=body)).json()
    (choice,) = full["choices"]
    text = choice["message"]["content"] if kind == "chat" else choice["text"]
    usage = full["usage"]["completion_tokens"]
    check_stopped(text, choice["finish_reason"], choice["stop_reason"], usage)

    options = {"include_usage": True}
    response = await sim.client.post(path, json={**body, "stream": True, "stream_options": options})
    *chunks, last, done = sse_payloads(response.text)
    assert done == "[DONE]"
    choices = [chunk["choices"][0] for chunk in chunks]
    streamed = "".join(
        c["delta"].get("content", "") if kind == "chat" else c["text"] for c in choices
    )
    final = choices[-1]
    tokens = last["usage"]["completion_tokens"]
    check_stopped(streamed, final["finish_reason"], final["stop_reason"], tokens)
