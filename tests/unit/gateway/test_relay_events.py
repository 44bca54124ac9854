"""A stream's events cut from the pieces the engine's bytes arrive in, wherever they are cut."""

from __future__ import annotations

import asyncio
import json
import sys
from types import FrameType
from typing import Any

import httpx
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway.engine_answers import Tally, relay_events

EVENTS = sse_events("llama-8b-served", with_usage=True)
WHOLE = b"".join(EVENTS)


def _relayed(pieces: list[bytes], *, keep_usage_chunk: bool = True) -> tuple[bytes, Tally]:
    tally = Tally()

    async def relay() -> bytes:
        response = httpx.Response(200, stream=Chunks(pieces))
        return b"".join(
            [out async for out in relay_events(response, tally, keep_usage_chunk=keep_usage_chunk)]
        )

    return asyncio.run(relay()), tally


def test_events_cut_anywhere_come_out_whole_and_counted_once() -> None:
    """Two pieces cut at every byte (a blank line split between them too), and a byte a
    piece: what goes out, and the usage and chunks read, are as for the stream in one piece."""
    whole, counted = _relayed([WHOLE])
    assert whole == WHOLE and counted.usage_seen and counted.finished
    cuts = [[WHOLE[:at], WHOLE[at:]] for at in range(len(WHOLE) + 1)]
    for pieces in [*cuts, [WHOLE[at : at + 1] for at in range(len(WHOLE))]]:
        out, tally = _relayed(pieces)
        assert out == whole
        assert (tally.chunks, tally.completion_tokens, tally.finished) == (
            counted.chunks,
            counted.completion_tokens,
            True,
        )


def test_a_stream_ending_mid_event_sends_what_came() -> None:
    cut = WHOLE[: WHOLE.index(b"data: [DONE]") + 4]
    out, _tally = _relayed([cut[:7], cut[7:]])
    assert out == cut


def _prompts_answered(prompts: int) -> bytes:
    """vLLM completing a list of prompts with ``continuous_usage_stats``: two tokens of each
    (5 a prompt), the answers interleaved, each chunk carrying its own choice's usage so far."""

    def chunk(index: int, tokens: int) -> bytes:
        usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
        choice = {"index": index, "text": "x", "finish_reason": "length" if tokens == 2 else None}
        data = {"object": "text_completion", "choices": [choice], "usage": usage}
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    return b"".join(chunk(i, tokens) for tokens in (1, 2) for i in range(prompts))


def _calls_to_relay(stream: bytes) -> tuple[int, Tally]:
    """The Python calls made relaying ``stream`` (a generator's every step is one): the
    gateway's work, counted the same on any machine."""
    tally, calls = Tally(), 0

    def count(_frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    async def relay() -> None:
        response = httpx.Response(200, stream=Chunks([stream, b"data: [DONE]\n\n"]))
        sys.setprofile(count)
        try:
            async for _out in relay_events(response, tally, keep_usage_chunk=True):
                pass
        finally:
            sys.setprofile(None)

    asyncio.run(relay())
    return calls, tally


def test_many_prompts_with_usage_in_every_chunk_are_metered_in_work_linear_in_chunks() -> None:
    """Before, each chunk's usage so far summed again every answer's: a streamed completion of
    a list of 1,000 prompts with continuous_usage_stats held the gateway's event loop (every
    other stream on it) for seconds, 4,000 prompts for over a minute."""
    calls, tally = _calls_to_relay(_prompts_answered(200))
    twice_the_calls, twice = _calls_to_relay(_prompts_answered(400))

    assert (tally.prompt_tokens, tally.completion_tokens) == (1000, 400)
    assert (twice.prompt_tokens, twice.completion_tokens) == (2000, 800)
    assert twice_the_calls <= 2 * calls
