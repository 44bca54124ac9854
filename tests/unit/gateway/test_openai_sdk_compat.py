"""The gateway as the official OpenAI Python SDK sees it, over scripted engines: which errors the
SDK retries by itself (each retry is another request, reserved, metered and sent to an engine
again) and which exception a failure raises."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import _ready
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway import engine_answers

HELLO = [{"role": "user", "content": "hello"}]


def _sdk(gw: Harness, key: str) -> openai.OpenAI:
    """The SDK as an application builds it: its default two retries."""
    return openai.OpenAI(api_key=key, base_url="http://testserver.local/v1", http_client=gw.client)


def _too_large(request: httpx.Request) -> httpx.Response:
    """An answer past the cap (made 4 kB here): whole, or as a stream's first event."""
    text = "x" * 8192
    if json.loads(request.content).get("stream"):
        chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        events = [f"data: {json.dumps(chunk)}\n\n".encode(), b"data: [DONE]\n\n"]
        return httpx.Response(
            200, stream=Chunks(events), headers={"content-type": "text/event-stream"}
        )
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage}
    return httpx.Response(200, json=body)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_sdk_does_not_send_again_an_answer_too_large_to_relay(
    make_gateway, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:  # type: ignore[no-untyped-def]
    """The 502 said "ask for less", and another endpoint is not tried since it would answer
    the same; but the SDK retries a 5xx twice by itself, so the engine generated the answer
    three times and the tenant's token limits were charged for each."""
    monkeypatch.setattr(engine_answers, "MAX_ANSWER_BYTES", 4096)
    gw, key = _ready(make_gateway, _too_large)

    with pytest.raises(openai.InternalServerError) as raised:
        _sdk(gw, key).chat.completions.create(model="llama", messages=HELLO, stream=stream)  # type: ignore[call-overload]

    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_error"
    assert "ask for less" in raised.value.message
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(gw.upstream) == 1
    assert [(r.status, r.error_code) for r in gw.drain_usage()] == [(502, "upstream_error")]


def _dies_mid_stream(request: httpx.Request) -> httpx.Response:
    events = sse_events(json.loads(request.content)["model"], True)
    return httpx.Response(
        200, stream=Chunks(events, fail_after=2), headers={"content-type": "text/event-stream"}
    )


def test_an_engine_dying_mid_stream_raises_the_sdks_api_error_with_our_code(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """What the SDK makes of the error event that ends such a stream: an ``APIError`` whose
    ``code`` and ``body`` are the gateway's, after the text that did come."""
    gw, key = _ready(make_gateway, _dies_mid_stream)
    stream = _sdk(gw, key).chat.completions.create(model="llama", messages=HELLO, stream=True)  # type: ignore[arg-type]
    text: list[str] = []

    def read() -> None:
        text.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError) as raised:
        read()
    assert "".join(text) == "hi"
    assert raised.value.code == "upstream_error"
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "server_error"
    assert [(r.status, r.error_code) for r in gw.drain_usage()] == [(502, "upstream_error")]
