"""An engine answer bigger than the gateway holds (``MAX_ANSWER_BYTES``, made small here): a
broken engine, or what fronts it, sending without end grew the gateway's memory, every
tenant's, until it was killed. Such an answer ends as the gateway's 502 (a stream's error
event once it began), is not sent to another endpoint, which would answer the same, and is
not held against the engine's health."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from tests.unit.gateway.engines_support import STREAM, Gateway, failing_on
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway import engine_answers

CAP = 4096
BIG = "x" * (2 * CAP)
MESSAGE = f"larger than the gateway relays ({CAP >> 20} MiB)"


@pytest.fixture(autouse=True)
def small_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_answers, "MAX_ANSWER_BYTES", CAP)


def _answer(content: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [choice], "usage": usage}
    return json.dumps(body).encode()


def _declared(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_answer(BIG), headers={"content-type": "application/json"})


def _undeclared(request: httpx.Request) -> httpx.Response:
    """Without a length: chunked, read until it ends (or, broken, never does)."""
    body = _answer(BIG)
    pieces = [body[i : i + 1024] for i in range(0, len(body), 1024)]
    return httpx.Response(200, stream=Chunks(pieces), headers={"content-type": "application/json"})


def _served(gw: Gateway, answers: list[httpx.Response]) -> None:
    assert sorted(r.status_code for r in answers) == [200] * 6 + [502] * 3
    assert gw.hosts().count("engine-1") == 3  # round-robin's third: not sent elsewhere
    assert len(gw.hosts()) == 9
    assert gw.service.engines.ejections("e1") == 0  # three in a row, held against no one
    records = [r for _id, r in gw.usage.read(20) if r.endpoint == "http://engine-1"]
    assert [(r.status, r.error_code) for r in records] == [(502, "upstream_error")] * 3


@pytest.mark.parametrize("answer", [_declared, _undeclared], ids=["length", "chunked"])
def test_a_plain_answer_past_the_cap_is_a_502_read_no_further(
    engine_gateway: Callable[..., Gateway], answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    gw = engine_gateway(failing_on("engine-1", answer))

    answers = [gw.chat() for _ in range(9)]

    _served(gw, answers)
    refused = next(r for r in answers if r.status_code == 502)
    assert refused.json()["error"]["code"] == "upstream_error"
    assert MESSAGE in refused.json()["error"]["message"]
    assert BIG not in refused.text


def _events(big_at: int) -> list[bytes]:
    """A stream whose event ``big_at`` is past the cap, sent in pieces without its end."""
    events = sse_events("llama-8b-served", True)
    data = json.loads(events[big_at][len(b"data: ") :])
    data["choices"][0]["delta"] = {"content": BIG}
    big = b"data: " + json.dumps(data).encode() + b"\n\n"
    pieces = [big[i : i + 1024] for i in range(0, len(big), 1024)]
    return [*events[:big_at], *pieces, *events[big_at + 1 :]]


def _big_first_event(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(_events(0))
    )


def test_a_stream_whose_first_event_is_past_the_cap_is_a_502(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _big_first_event))

    answers = [gw.chat(STREAM) for _ in range(9)]

    _served(gw, answers)
    refused = next(r for r in answers if r.status_code == 502)
    assert MESSAGE in refused.json()["error"]["message"]


def _big_later_event(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(_events(1))
    )


def test_a_stream_event_past_the_cap_mid_way_ends_the_stream_with_the_error_event(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _big_later_event))

    bodies = [gw.chat(STREAM).text for _ in range(3)]

    (cut,) = [body for body in bodies if MESSAGE in body]
    assert '"upstream_error"' in cut and cut.endswith("data: [DONE]\n\n")
    assert '"role": "assistant"' in cut or '"role":"assistant"' in cut  # what came before came
    assert BIG not in cut
    assert gw.service.engines.ejections("e1") == 0
    (record,) = [r for _id, r in gw.usage.read(10) if r.endpoint == "http://engine-1"]
    assert (record.status, record.error_code) == (502, "upstream_error")


class _WithoutEnd(httpx.AsyncByteStream):
    """A plain answer's body sent piece after piece far past the cap (a broken engine or proxy
    sends for ever), counting what the gateway pulled of it."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        piece = b"x" * 1024
        for _ in range(1024 * CAP // len(piece)):
            self.pulled += len(piece)
            yield piece


def test_a_plain_answer_without_end_is_read_no_further_than_the_cap(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """The 200 answer a plain request waits for was read whole before its size was judged:
    without end, for ever, and all of it held."""
    bodies: list[_WithoutEnd] = []

    def without_end(request: httpx.Request) -> httpx.Response:
        bodies.append(_WithoutEnd())
        return httpx.Response(200, stream=bodies[-1], headers={"content-type": "application/json"})

    gw = engine_gateway(failing_on("engine-1", without_end))

    answers = [gw.chat() for _ in range(9)]

    _served(gw, answers)
    assert len(bodies) == 3
    assert all(body.pulled <= CAP + 1024 for body in bodies), [body.pulled for body in bodies]
