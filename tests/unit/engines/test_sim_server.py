"""The simulated engine's HTTP surface, as a vLLM client sees it (in-process ASGI client)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.engines.helpers import small_h100, sse_payloads

from support.engine_contract import (
    token_logprobs,
)
from trunkline.engines import (
    ChatMessage,
    SimApp,
    apply_chat_template,
    create_sim_app,
    parse_vllm_metrics,
    tokenize,
)
from trunkline.engines.openai_requests import DEFAULT_MAX_TOKENS

MODEL = "llama"
MESSAGES = [
    {"role": "system", "content": "You are the assistant of ACME Telecom. " * 8},
    {"role": "user", "content": "My router blinks red."},
]
PROMPT_TOKENS = len(apply_chat_template([ChatMessage(m["role"], m["content"]) for m in MESSAGES]))


@dataclass
class Sim:
    app: SimApp
    client: httpx.AsyncClient

    async def chat(self, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body}
        )

    async def load(self) -> Any:
        return parse_vllm_metrics((await self.client.get("/metrics")).text)


@contextlib.asynccontextmanager
async def open_sim(app: SimApp) -> AsyncIterator[Sim]:
    transport = httpx.ASGITransport(app=app)
    async with app, httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield Sim(app, client)


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    app = create_sim_app(
        model=MODEL, profile=small_h100(max_model_len=512), seed=3, time_scale=0.01
    )
    async with open_sim(app) as opened:
        yield opened


async def test_models_lists_the_served_model_like_vllm(sim: Sim) -> None:
    response = await sim.client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert {k: card[k] for k in ("id", "object", "owned_by", "root", "max_model_len")} == {
        "id": MODEL,
        "object": "model",
        "owned_by": "vllm",
        "root": MODEL,
        "max_model_len": 512,
    }
    assert isinstance(card["created"], int)


async def test_health_answers_200_with_an_empty_body(sim: Sim) -> None:
    response = await sim.client.get("/health")
    assert (response.status_code, response.content) == (200, b"")


async def test_chat_returns_max_tokens_of_text_and_usage(sim: Sim) -> None:
    response = await sim.chat(max_tokens=7)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 7
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": 7,
        "total_tokens": PROMPT_TOKENS + 7,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


async def test_max_completion_tokens_wins_and_a_default_applies(sim: Sim) -> None:
    both = (await sim.chat(max_tokens=9, max_completion_tokens=3)).json()
    assert both["usage"]["completion_tokens"] == 3
    default = (await sim.chat()).json()
    assert default["usage"]["completion_tokens"] == 16


async def test_a_repeated_prompt_reports_cached_tokens_unless_salted_differently(
    sim: Sim,
) -> None:
    await sim.chat(max_tokens=2, cache_salt="tenant-a")
    again = (await sim.chat(max_tokens=2, cache_salt="tenant-a")).json()["usage"]
    cached = again["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached < PROMPT_TOKENS
    assert cached % sim.app.profile.block_size == 0
    other = (await sim.chat(max_tokens=2, cache_salt="tenant-b")).json()["usage"]
    assert other["prompt_tokens_details"]["cached_tokens"] == 0


async def test_stream_sends_role_then_deltas_then_done_without_usage(sim: Sim) -> None:
    response = await sim.chat(max_tokens=4, stream=True, seed=11)
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0] for chunk in chunks[1:]]
    assert len(deltas) == 4
    assert [delta["finish_reason"] for delta in deltas] == [None, None, None, "length"]
    assert all("usage" not in chunk for chunk in chunks)
    streamed = "".join(delta["delta"]["content"] for delta in deltas)
    whole = (await sim.chat(max_tokens=4, seed=11)).json()["choices"][0]["message"]["content"]
    assert streamed == whole


async def test_stream_with_include_usage_ends_with_a_usage_chunk(sim: Sim) -> None:
    response = await sim.chat(max_tokens=3, stream=True, stream_options={"include_usage": True})
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == PROMPT_TOKENS
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert usage_chunk["usage"]["total_tokens"] == PROMPT_TOKENS + 3
    assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert payloads[-3]["choices"][0]["finish_reason"] == "length"


async def test_a_chat_answer_with_no_maximum_ends_on_its_own_as_vllms_do(sim: Sim) -> None:
    # vLLM generates a chat answer without max_tokens until the model's end-of-sequence token
    # ("stop"); the simulated model's answer ends after DEFAULT_MAX_TOKENS. A maximum the
    # client set is a cap ("length"), and completions keep OpenAI's legacy 16-token cut.
    natural = (await sim.chat()).json()
    assert natural["choices"][0]["finish_reason"] == "stop"
    assert natural["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    streamed = await sim.chat(stream=True)
    assert '"finish_reason":"stop"' in streamed.text.replace(" ", "")
    capped = (await sim.chat(max_completion_tokens=DEFAULT_MAX_TOKENS)).json()
    assert capped["choices"][0]["finish_reason"] == "length"
    text = await sim.client.post("/v1/completions", json={"model": MODEL, "prompt": "Once"})
    assert text.json()["choices"][0]["finish_reason"] == "length"
    metrics = (await sim.client.get("/metrics")).text
    assert 'finished_reason="stop",model_name="llama"} 2.0' in metrics


async def test_completions_take_text_or_token_ids(sim: Sim) -> None:
    text = await sim.client.post(
        "/v1/completions", json={"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5}
    )
    body = text.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert len(body["choices"][0]["text"].split()) == 5
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["prompt_tokens"] == len(tokenize("Once upon a time"))
    ids = await sim.client.post(
        "/v1/completions", json={"model": MODEL, "prompt": [5, 6, 7, 8, 9], "max_tokens": 1}
    )
    assert ids.json()["usage"]["prompt_tokens"] == 5


async def test_completions_stream_text_chunks_and_usage(sim: Sim) -> None:
    response = await sim.client.post(
        "/v1/completions",
        json={
            "model": MODEL,
            "prompt": "Once upon a time",
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    texts = [chunk["choices"][0] for chunk in payloads[:-2]]
    assert len(texts) == 3
    assert all(chunk["object"] == "text_completion" for chunk in payloads[:-1])
    assert all(isinstance(choice["text"], str) for choice in texts)
    assert texts[-1]["finish_reason"] == "length"
    assert payloads[-2]["choices"] == []
    assert payloads[-2]["usage"]["completion_tokens"] == 3


async def test_embeddings_are_deterministic_unit_vectors(sim: Sim) -> None:
    inputs = ["route me to the cheapest pool", "something else entirely"]
    response = await sim.client.post("/v1/embeddings", json={"model": MODEL, "input": inputs})
    body = response.json()
    assert response.status_code == 200
    assert [item["index"] for item in body["data"]] == [0, 1]
    first, second = (item["embedding"] for item in body["data"])
    assert math.isclose(math.fsum(x * x for x in first), 1.0, rel_tol=1e-9)
    assert first != second
    assert body["usage"]["prompt_tokens"] == sum(len(tokenize(text)) for text in inputs)
    single = await sim.client.post("/v1/embeddings", json={"model": MODEL, "input": inputs[0]})
    assert single.json()["data"][0]["embedding"] == first
    packed = await sim.client.post(
        "/v1/embeddings",
        json={"model": MODEL, "input": inputs[0], "encoding_format": "base64"},
    )
    unpacked = array("f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert list(unpacked) == pytest.approx(first, abs=1e-6)


LONG_TEXT = "word " * 600  # 600 tokens, over max_model_len 512
CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        (CHAT_PATH, {"model": MODEL, "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
        (CHAT_PATH, {"model": MODEL, "messages": MESSAGES, "max_tokens": -3}, 400, "max_tokens"),
        (CHAT_PATH, {"model": MODEL, "messages": MESSAGES, "max_tokens": "9"}, 400, "max_tokens"),
        (CHAT_PATH, {"model": MODEL}, 400, "messages"),
        (CHAT_PATH, {"model": MODEL, "messages": []}, 400, "messages"),
        (COMPLETIONS_PATH, {"model": MODEL}, 400, "prompt"),
        (COMPLETIONS_PATH, {"model": MODEL, "prompt": LONG_TEXT}, 400, "input_tokens"),
        (
            COMPLETIONS_PATH,
            {"model": MODEL, "prompt": "word " * 500, "max_tokens": 513},
            400,
            "max_tokens",
        ),
        (
            CHAT_PATH,
            {"model": MODEL, "messages": MESSAGES, "stream_options": {"include_usage": True}},
            400,
            "stream_options",
        ),
        (EMBEDDINGS_PATH, {"model": MODEL}, 400, "input"),
        (EMBEDDINGS_PATH, {"model": MODEL, "input": LONG_TEXT}, 400, "input"),
        (CHAT_PATH, {"model": "gpt-4", "messages": MESSAGES}, 404, "model"),
        (COMPLETIONS_PATH, {"model": "gpt-4", "prompt": "hi"}, 404, "model"),
        (EMBEDDINGS_PATH, {"model": "gpt-4", "input": "hi"}, 404, "model"),
    ],
)
async def test_bad_requests_get_vllm_errors_and_never_reach_the_engine(
    sim: Sim, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    response = await sim.client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")
    assert error["code"] == status
    assert error["param"] == param
    assert error["message"]
    assert sim.app.core.counters.prefix_cache_queries == 0
    assert not sim.app.core.has_unfinished_requests()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("n", [1, 2])
async def test_an_engine_that_closes_mid_answer_says_so_as_vllm_does(n: int, stream: bool) -> None:
    """As vLLM when its engine core dies: a stream ends with an error event (code 500) and
    ``[DONE]``, a plain request gets a 500 in vLLM's error shape, and ``/health`` turns 503.
    Before, the response was cut off (and at first, with one reader task per answer, left open
    for ever), and /health kept answering 200."""
    app = create_sim_app(model=MODEL, profile=small_h100(max_model_len=512), seed=3, time_scale=1.0)
    async with open_sim(app) as sim:
        body = {"model": MODEL, "prompt": "hi there", "max_tokens": 400, "stream": stream, "n": n}
        request = asyncio.create_task(sim.client.post(COMPLETIONS_PATH, json=body))
        await app.engine.wait_for(lambda core: core.has_unfinished_requests())
        await app.engine.aclose()
        response = await asyncio.wait_for(request, 10)
        if stream:
            assert response.status_code == 200
            *_, failed, done = sse_payloads(response.text)
            assert done == "[DONE]"
            error = failed["error"]
        else:
            assert response.status_code == 500, response.text
            error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == ("InternalServerError", 500, None)
        assert "EngineCore encountered an issue" in error["message"]
        assert (await sim.client.get("/health")).status_code == 503
        late = await sim.client.post(COMPLETIONS_PATH, json={**body, "stream": False})
        assert (late.status_code, late.json()["error"]["code"]) == (500, 500)


async def test_an_unknown_model_is_named_in_the_error(sim: Sim) -> None:
    response = await sim.chat(model="gpt-4")
    assert response.json()["error"]["message"] == "The model `gpt-4` does not exist."


async def test_malformed_json_is_a_bad_request(sim: Sim) -> None:
    response = await sim.client.post(
        CHAT_PATH,
        content=b'{"model": "llama", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_unknown_paths_and_methods_answer_like_fastapi(sim: Sim) -> None:
    assert (await sim.client.get("/v1/nothing")).status_code == 404
    assert (await sim.client.get(CHAT_PATH)).status_code == 405


async def test_metrics_follow_requests_from_waiting_to_running_to_done() -> None:
    app = create_sim_app(model=MODEL, profile=small_h100(max_num_seqs=2), time_scale=0)
    async with open_sim(app) as sim:
        sim.app.engine.pause()
        async with asyncio.timeout(10):
            calls = [asyncio.create_task(sim.chat(max_tokens=3)) for _ in range(3)]
            await sim.app.engine.wait_for(lambda core: core.num_requests_waiting == 3)
            queued = await sim.load()
            assert (queued.running, queued.waiting) == (0, 3)

            await sim.app.engine.step_once()
            batched = await sim.load()
            assert (batched.running, batched.waiting) == (2, 1)
            assert batched.kv_usage > 0

            sim.app.engine.resume()
            responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [200, 200, 200]
        done = await sim.load()
        assert (done.running, done.waiting, done.kv_usage) == (0, 0, 0)
        assert done.prefix_cache_queries == 3 * PROMPT_TOKENS
        metrics = (await sim.client.get("/metrics")).text
        assert (
            'vllm:request_success_total{engine="0",finished_reason="length",model_name="llama"} 3.0'
            in metrics
        )


async def test_the_same_seed_gives_the_same_answers() -> None:
    async def answers() -> list[str]:
        app = create_sim_app(model=MODEL, profile=small_h100(), seed=5, time_scale=0)
        async with open_sim(app) as sim:
            first = (await sim.chat(max_tokens=5)).json()
            second = (await sim.chat(max_tokens=5)).json()
        return [body["choices"][0]["message"]["content"] for body in (first, second)]

    first_run = await answers()
    assert first_run == await answers()
    assert first_run[0] != first_run[1]


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


async def test_latency_metrics_are_modelled_time_not_scaled_wall_time() -> None:
    profile = small_h100()
    app = create_sim_app(model=MODEL, profile=profile, time_scale=0.001)
    async with open_sim(app) as sim:
        await sim.chat(max_tokens=3)
        text = (await sim.client.get("/metrics")).text
    sums = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_seconds_sum")
    }
    pairs = PROMPT_TOKENS * (PROMPT_TOKENS + 1) // 2
    prefill_step = profile.step_time(PROMPT_TOKENS, 1, pairs, 0)
    decode_steps = sum(profile.step_time(1, 1, 0, PROMPT_TOKENS + i) for i in (1, 2))
    assert sums["vllm:time_to_first_token_seconds_sum"] == pytest.approx(prefill_step)
    assert sums["vllm:inter_token_latency_seconds_sum"] == pytest.approx(decode_steps)
    assert sums["vllm:e2e_request_latency_seconds_sum"] == pytest.approx(
        prefill_step + decode_steps
    )


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
