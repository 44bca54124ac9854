"""A stream's events cut from the pieces the engine's bytes arrive in, wherever they are cut."""

from __future__ import annotations

import asyncio

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
