"""An answer the engine gave up: what vLLM sends for the requests it runs when it stops on
SIGTERM (docs/real-vllm.md): ``finish_reason: "abort"``, or an error event when its engine core
died first. It is the engine's failure, never a finish: a plain answer is asked of the next
endpoint (nothing reached the client), a stream that had sent its first event ends with the
gateway's error event, one that had not moves on."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from tests.unit.gateway.engines_support import CHAT, STREAM, Gateway, failing_on
from tests.unit.gateway.upstreams import USAGE, Chunks, chat_json, sse_events


def _aborted_chat(request: httpx.Request) -> httpx.Response:
    """vLLM's answer to a plain request it aborted: a 200, cut short."""
    answer = json.loads(chat_json(request).content)
    answer["choices"][0]["finish_reason"] = "abort"
    return httpx.Response(200, content=json.dumps(answer, separators=(",", ":")).encode())


def _compact(data: dict[str, object]) -> bytes:
    """A ``data:`` line as vLLM's pydantic models write it (no spaces)."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode()


_ABORT_CHUNK = _compact(
    {
        "object": "chat.completion.chunk",
        "model": "llama-8b-served",
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "abort"}],
    }
)
# vLLM's stream generators write their error events with json.dumps (spaces).
_ENGINE_DEAD = (
    b"data: "
    + json.dumps(
        {
            "error": {
                "message": "EngineCore encountered an issue. See stack trace (above).",
                "type": "InternalServerError",
                "param": None,
                "code": 500,
            }
        }
    ).encode()
)


def _stream_ending(
    last: bytes | None, events_before: int
) -> Callable[[httpx.Request], httpx.Response]:
    """vLLM's stream cut after ``events_before`` events by ``last`` (if any), then the usage
    chunk and ``[DONE]``."""

    def handler(request: httpx.Request) -> httpx.Response:
        events = [e.strip() for e in sse_events("llama-8b-served", False)[:events_before]]
        usage = {"object": "chat.completion.chunk", "choices": [], "usage": USAGE}
        events += [*([last] if last else []), _compact(usage), b"data: [DONE]"]
        stream = Chunks([event + b"\n\n" for event in events])
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    return handler


# How vLLM ends the streams it runs when it stops: an abort chunk, an error event when its
# engine core died first, or, for one the engine had not started, no chunk before ``[DONE]``.
ENDINGS = pytest.mark.parametrize(
    "last", [_ABORT_CHUNK, _ENGINE_DEAD, None], ids=["abort", "engine-dead", "done-alone"]
)


def test_a_plain_answer_the_engine_aborted_is_asked_of_the_next_endpoint(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _aborted_chat))

    responses = [gw.chat() for _ in range(6)]

    assert [r.status_code for r in responses] == [200] * 6
    assert {r.json()["choices"][0]["finish_reason"] for r in responses} == {"length"}
    # Round-robin sent two there first; each moved on, and three in a row would eject it.
    assert gw.hosts().count("engine-1") == 2
    assert gw.service.engines.health_report()[0].request_failures == 2
    records = [record for _id, record in gw.usage.read(10)]
    assert "http://engine-1" not in {r.endpoint for r in records}


def test_a_plain_answer_aborted_everywhere_is_a_502(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(_aborted_chat)

    response = gw.chat(CHAT)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "stopped before finishing" in response.json()["error"]["message"]
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.error_code) == (502, "upstream_error")


@ENDINGS
def test_a_stream_the_engine_gave_up_after_its_first_event_ends_with_the_error_event(
    engine_gateway: Callable[..., Gateway], last: bytes | None
) -> None:
    gw = engine_gateway(failing_on("engine-1", _stream_ending(last, events_before=3)))

    bodies = [gw.chat(STREAM).text for _ in range(9)]

    cut = [body for body in bodies if '"upstream_error"' in body]
    assert len(cut) == 3  # every third request went to engine-1
    assert all('"content":"hi"' in body.replace(" ", "") for body in cut)  # what came first
    assert all(body.endswith("data: [DONE]\n\n") for body in cut)
    assert all("abort" not in body and "EngineCore" not in body for body in bodies)
    assert gw.service.engines.ejections("e1") == 1  # three failures in a row
    failed = [r for _id, r in gw.usage.read(20) if r.endpoint == "http://engine-1"]
    assert [(r.status, r.error_code) for r in failed] == [(502, "upstream_error")] * 3


@ENDINGS
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_the_engine_gave_up_before_its_first_event_moves_on(
    engine_gateway: Callable[..., Gateway], last: bytes | None, include_usage: bool
) -> None:
    gw = engine_gateway(failing_on("engine-1", _stream_ending(last, events_before=0)))
    # The usage chunk that comes before [DONE] is held until the stream proved finished.
    body = {**STREAM, "stream_options": {"include_usage": include_usage}}

    response = gw.chat(body)

    assert response.status_code == 200
    assert '"content"' in response.text and "abort" not in response.text
    assert "error" not in response.text
    assert gw.hosts() == ["engine-1", "engine-2"]
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.endpoint) == (200, "http://engine-2")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("bad stop sequence", None),
        ("This model's maximum context length is 2048 tokens.", "context_length_exceeded"),
    ],
)
def test_an_error_event_blaming_the_request_reaches_the_client_in_openais_shape(
    engine_gateway: Callable[..., Gateway], message: str, code: str | None
) -> None:
    """As the engine's 4xx answers do: vLLM's ``BadRequestError`` type and integer code reached
    clients reading ``type`` and ``code`` as OpenAI's (the SDK raises with them)."""
    error = {"message": message, "type": "BadRequestError", "param": "stop"}
    bad_request = b"data: " + json.dumps({"error": {**error, "code": 400}}).encode()
    gw = engine_gateway(_stream_ending(bad_request, events_before=3))

    body = gw.chat(STREAM).text

    [event] = [json.loads(line[6:]) for line in body.splitlines() if '"error"' in line]
    assert event == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "stop",
            "code": code,
        }
    }
    assert body.endswith("data: [DONE]\n\n")
    assert gw.service.engines.health_report()[0].request_failures == 0


def _closed_after(events_before: int) -> Callable[[httpx.Request], httpx.Response]:
    """A stream whose body ends cleanly after ``events_before`` events, with no finish and no
    ``[DONE]``: what a proxy in front of the engine sends when it ends its own body where the
    engine broke off (a close-delimited or re-chunked response)."""

    def handler(request: httpx.Request) -> httpx.Response:
        stream = Chunks(sse_events("llama-8b-served", False)[:events_before])
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    return handler


def test_a_stream_closed_before_its_finish_ends_with_the_error_event(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """It read as an answer that came whole: a 200 cut short with no word of it, the endpoint
    counted healthy and the cut answer metered as completed."""
    gw = engine_gateway(failing_on("engine-1", _closed_after(3)))

    bodies = [gw.chat(STREAM).text for _ in range(3)]  # one to each endpoint

    [cut] = [body for body in bodies if '"upstream_error"' in body]
    assert '"content": "hi"' in cut and cut.endswith("data: [DONE]\n\n")
    failed = [r for _id, r in gw.usage.read(10) if r.endpoint == "http://engine-1"]
    assert [(r.status, r.error_code) for r in failed] == [(502, "upstream_error")]
    assert gw.service.engines.health_report()[0].request_failures == 1


def test_a_stream_closed_before_its_first_event_moves_on(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """An empty 200 stream reached the client as an empty answer, metered as completed."""
    gw = engine_gateway(failing_on("engine-1", _closed_after(0)))

    response = gw.chat(STREAM)

    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert '"finish_reason": "length"' in response.text
    assert gw.hosts() == ["engine-1", "engine-2"]
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.endpoint) == (200, "http://engine-2")


def _two_answers_dying(request: httpx.Request) -> httpx.Response:
    """vLLM streaming ``n: 2`` with ``continuous_usage_stats`` (each chunk carries its own
    choice's usage so far, as vLLM's serving code writes it), its engine core dying after two
    tokens of each answer."""

    def chunk(index: int, delta: dict[str, str], tokens: int) -> bytes:
        usage = {"prompt_tokens": 21, "completion_tokens": tokens, "total_tokens": 21 + tokens}
        choice = {"index": index, "delta": delta, "finish_reason": None}
        return _compact({"object": "chat.completion.chunk", "choices": [choice], "usage": usage})

    role = {"role": "assistant", "content": ""}
    events = [chunk(0, role, 0), chunk(1, role, 0)]
    events += [chunk(i, {"content": "hi"}, tokens) for tokens in (1, 2) for i in (0, 1)]
    stream = Chunks([event + b"\n\n" for event in [*events, _ENGINE_DEAD, b"data: [DONE]"]])
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def test_a_stream_of_n_answers_with_usage_in_every_chunk_cut_short_bills_every_answer(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """With usage in every chunk, a stream the engine gave up was billed the usage of the last
    chunk alone: one answer's tokens so far (2 of the 4 streamed), the others' forgotten."""
    gw = engine_gateway(_two_answers_dying)
    options = {"include_usage": True, "continuous_usage_stats": True}

    body = gw.chat({**STREAM, "n": 2, "stream_options": options}).text

    assert '"upstream_error"' in body
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.prompt_tokens, record.completion_tokens) == (502, 21, 4)


def _prompts_dying(request: httpx.Request) -> httpx.Response:
    """vLLM completing a list of prompts, its engine core dying after the first prompt's first
    token, before the others' came; with ``continuous_usage_stats`` that token's chunk carries
    the first prompt's usage so far (its prompt tokens alone)."""
    options = json.loads(request.content).get("stream_options") or {}
    data: dict[str, object] = {
        "object": "text_completion",
        "choices": [{"index": 0, "text": "hi", "logprobs": None, "finish_reason": None}],
    }
    if options.get("continuous_usage_stats"):
        data["usage"] = {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
    stream = Chunks([event + b"\n\n" for event in [_compact(data), _ENGINE_DEAD, b"data: [DONE]"]])
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def test_a_list_of_prompts_cut_short_with_usage_in_every_chunk_bills_every_prompt(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """With usage in every chunk, a stream cut before some prompts' first token was billed the
    prompts whose chunks came alone (one of three here); without, every prompt's estimate: a
    client asking for usage in every chunk and leaving early paid for a third of its prompts."""
    gw = engine_gateway(_prompts_dying)
    prompts = ["tell me a story about a lighthouse keeper and the sea"] * 3
    batch = {"model": "llama", "prompt": prompts, "stream": True}
    every_chunk = {"include_usage": True, "continuous_usage_stats": True}

    for options in ({"include_usage": True}, every_chunk):
        gw.client.post(
            "/v1/completions",
            json={**batch, "stream_options": options},
            headers={"authorization": f"Bearer {gw.key}"},
        )

    last_chunk, every = [record for _id, record in gw.usage.read(10)]
    assert (last_chunk.status, every.status) == (502, 502)
    assert every.prompt_tokens >= last_chunk.prompt_tokens > 4
