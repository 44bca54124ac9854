"""The simulated engine's HTTP surface, as a vLLM client sees it (in-process ASGI client)."""

from __future__ import annotations

import asyncio
import base64
import math
from array import array
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.engines.helpers import small_h100, sse_payloads

from trunkline.engines import (
    create_sim_app,
    tokenize,
)
from trunkline.engines.openai_requests import DEFAULT_MAX_TOKENS
from unit.engines.sim_client import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    MESSAGES,
    MODEL,
    PROMPT_TOKENS,
    Sim,
    open_sim,
)


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
