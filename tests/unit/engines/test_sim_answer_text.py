"""What a simulated engine's answer holds, as vLLM 0.32's: where stop strings end it, and its
log-probabilities."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tests.unit.engines.helpers import sse_payloads

from support.engine_contract import (
    token_logprobs,
)
from unit.engines.sim_client import CHAT_PATH, MESSAGES, MODEL, Sim


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_ends_at_its_stop_string_and_so_does_the_engine(
    sim: Sim, stream: bool
) -> None:
    """Before, stop strings were taken and ignored: the answer ran to max_tokens, all of them
    counted. As vLLM, the answer now ends before the first stop string it meets, and its
    engine request ends with the token that completed it."""
    plain = (await sim.chat(max_tokens=12, seed=7)).json()["choices"][0]["message"]["content"]
    stop = plain.split(" ")[4][:2]  # a piece of the fourth word: met there or before
    generated = sim.app.core.counters.generation_tokens
    body = {"max_tokens": 12, "seed": 7, "stop": ["never said", stop]}
    text, choice, usage = await _answer(sim, body, stream)
    assert text == plain[: plain.find(stop)]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop)
    assert usage["completion_tokens"] < 12
    assert sim.app.core.counters.generation_tokens - generated == usage["completion_tokens"]


async def _answer(sim: Sim, body: dict[str, Any], stream: bool) -> tuple[str, Any, Any]:
    """A one-choice chat answer's text, its (last) choice and its usage, plain or streamed."""
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    response = await sim.chat(**body)
    if not stream:
        (choice,) = response.json()["choices"]
        return choice["message"]["content"], choice, response.json()["usage"]
    *chunks, last, _done = sse_payloads(response.text)
    choices = [chunk["choices"][0] for chunk in chunks]
    return "".join(c["delta"]["content"] for c in choices), choices[-1], last["usage"]


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_strings_are_not_looked_for_before_min_tokens(sim: Sim, stream: bool) -> None:
    """Before, a stop string in the first min_tokens tokens ended the answer (a space: at the
    first token, an empty answer); vLLM looks for stop strings only past min_tokens, and the
    ones met before stay in the text."""
    plain = (await sim.chat(max_tokens=30, seed=7)).json()["choices"][0]["message"]["content"]
    body = {"max_tokens": 30, "seed": 7, "stop": " ", "min_tokens": 5}
    text, choice, usage = await _answer(sim, body, stream)
    assert usage["completion_tokens"] > 5
    assert plain.startswith(text) and plain[len(text)] == " " and " " in text
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", " ")


@pytest.mark.parametrize("stream", [False, True])
async def test_include_stop_str_in_output_keeps_the_stop_string(sim: Sim, stream: bool) -> None:
    """Before, the simulated engine took include_stop_str_in_output and left the stop string
    out all the same; vLLM ends the answer with it."""
    plain = (await sim.chat(max_tokens=12, seed=7)).json()["choices"][0]["message"]["content"]
    stop = plain.split(" ")[4][:2]
    body = {"max_tokens": 12, "seed": 7, "stop": [stop], "include_stop_str_in_output": True}
    text, choice, _usage = await _answer(sim, body, stream)
    assert text == plain[: plain.find(stop) + len(stop)]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop)


async def test_an_echo_without_room_for_its_one_token_is_a_400_not_a_crash(sim: Sim) -> None:
    """A completions echo with max_tokens 0 generates one token, as vLLM does. With a prompt
    filling the context window that token does not fit: the engine refused it and the server,
    not expecting that, failed with a bare 500 (which the gateway takes for the engine's
    failure: the request sent to every endpoint, each counted against its health)."""
    prompts = [[100, 101], list(range(100, 100 + 512))]  # the second fills max_model_len
    body = {"model": MODEL, "prompt": prompts, "echo": True, "max_tokens": 0}

    response = await sim.client.post("/v1/completions", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"
    assert "max_model_len 512" in response.json()["error"]["message"]
    assert not sim.app.core.requests  # the first prompt's request went with it


@pytest.mark.parametrize(
    ("kind", "path", "asked", "listed"),
    [
        ("chat", CHAT_PATH, {"logprobs": True, "top_logprobs": 3}, 3),
        ("chat", CHAT_PATH, {"logprobs": True}, 0),
        ("completion", "/v1/completions", {"logprobs": 2}, 3),  # the sampled one on top
        ("completion", "/v1/completions", {"logprobs": 0}, 1),
    ],
)
async def test_logprobs_come_per_token_as_vllm_shapes_them(
    sim: Sim, kind: str, path: str, asked: dict[str, Any], listed: int
) -> None:
    prompt = {"messages": MESSAGES} if kind == "chat" else {"prompt": "My router blinks red."}
    body = {"model": MODEL, **prompt, "max_tokens": 6, **asked}

    plain = (await sim.client.post(path, json=body)).json()["choices"][0]["logprobs"]
    streamed = (await sim.client.post(path, json={**body, "stream": True})).text
    chunks = [chunk for chunk in sse_payloads(streamed) if chunk != "[DONE]"]
    parts = [chunk["choices"][0]["logprobs"] for chunk in chunks]

    per_token = token_logprobs(kind, [plain])
    assert len(per_token) == 6
    for logprob, top in per_token:
        assert logprob <= 0 and len(top) == listed
        # the sampled token is the likeliest listed, the others less and less likely
        assert top == sorted(top, reverse=True) and (not top or top[0] == logprob)
        assert sum(math.exp(value) for value in top) <= 1.0 + 1e-9
    # A stream carries each token's logprobs in its chunk (the role chunk has none), and the
    # same prompt is as sure at each position whether streamed or not.
    if kind == "chat":
        assert parts[0] is None  # the role chunk
        parts = parts[1:]
    assert None not in parts
    assert [lp for lp, _ in token_logprobs(kind, parts)] == [lp for lp, _ in per_token]
    if kind == "completion":
        offsets = [p["text_offset"][0] for p in parts]
        texts = [p["tokens"][0] for p in parts]
        assert offsets == [sum(map(len, texts[:i])) for i in range(len(texts))]


async def test_no_logprobs_unless_asked(sim: Sim) -> None:
    choice = (await sim.chat(max_tokens=2)).json()["choices"][0]
    assert choice["logprobs"] is None


async def test_some_prompts_make_the_model_unsure_always_the_same(sim: Sim) -> None:
    """What a cascade's logprob check reads: answers to some prompts are sure, to others not."""

    async def mean_logprob(question: str) -> float:
        messages = [{"role": "user", "content": question}]
        response = await sim.chat(messages=messages, max_tokens=8, logprobs=True)
        values = [
            lp for lp, _ in token_logprobs("chat", [response.json()["choices"][0]["logprobs"]])
        ]
        return sum(values) / len(values)

    questions = [f"Question number {n}: why does my router blink?" for n in range(40)]
    means = [await mean_logprob(q) for q in questions]
    assert means == [await mean_logprob(q) for q in questions]
    sure = sum(mean >= -1.0 for mean in means)
    assert 0 < sure < len(means)  # a threshold of -1.0 keeps some answers, escalates others
