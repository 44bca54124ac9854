"""A request when its engine fails or stops: retried elsewhere before the first byte (a
stream's first event), a stream ended with an error event after it, and what counts against
the endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import httpx
import pytest
from tests.unit.gateway.engines_support import (
    STREAM,
    Gateway,
    Handler,
    failing_on,
)
from tests.unit.gateway.upstreams import Chunks, sse_events

from trunkline.gateway.endpoints import EngineState


def _silent(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no response head", request=request)


def test_stream_read_timeout_before_the_head_is_retried_a_plain_one_is_not(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _silent))

    streamed = [gw.chat(STREAM).status_code for _ in range(3)]
    assert streamed == [200, 200, 200]

    gw = engine_gateway(failing_on("engine-1", _silent))
    plain = [gw.chat() for _ in range(9)]
    # Round-robin sends every third request to engine-1: each may still be generating there,
    # so it is not sent twice; the client gets a 504 that tells the OpenAI SDKs not to retry.
    assert sorted(r.status_code for r in plain) == [200] * 6 + [504] * 3
    timed_out = next(r for r in plain if r.status_code == 504)
    assert timed_out.json()["error"]["code"] == "upstream_timeout"
    assert timed_out.headers["x-should-retry"] == "false"
    # A long answer is no fault of the engine's: three in a row do not eject it...
    assert gw.hosts().count("engine-1") == 3
    assert gw.service.engines.ejections("e1") == 0
    # ...and each is metered on it, with the prompt it prefilled.
    records = [r for _id, r in gw.usage.read(20) if r.status == 504]
    assert {r.endpoint for r in records} == {"http://engine-1"}
    assert all(r.prompt_tokens > 0 for r in records)


def _dies_before_the_first_event(request: httpx.Request) -> httpx.Response:
    events = sse_events("llama-8b-served", True)
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(events, fail_after=0)
    )


def test_a_stream_dying_before_its_first_event_moves_to_another_endpoint(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _dies_before_the_first_event))

    bodies = [gw.chat(STREAM).text for _ in range(3)]

    assert all('"error"' not in body and body.endswith("data: [DONE]\n\n") for body in bodies)
    assert gw.hosts().count("engine-1") == 1  # round-robin sent one there; it was retried
    records = [record for _id, record in gw.usage.read(10)]
    assert [r.status for r in records] == [200, 200, 200]
    assert all(r.endpoint != "http://engine-1" for r in records)


def _dies_mid_stream(request: httpx.Request) -> httpx.Response:
    events = sse_events("llama-8b-served", True)
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(events, fail_after=2)
    )


def test_streams_dying_midway_eject_their_endpoint(engine_gateway: Callable[..., Gateway]) -> None:
    # Each stream's 200 head came before it died: the head is no success to reset the count.
    gw = engine_gateway(failing_on("engine-1", _dies_mid_stream))

    bodies = [gw.chat(STREAM).text for _ in range(12)]

    assert sum('"upstream_error"' in body for body in bodies) == 3
    assert gw.hosts().count("engine-1") == 3  # three in a row, then never again
    assert gw.service.engines.ejections("e1") == 1


class _StallsMidStream(httpx.AsyncByteStream):
    """Sends its first two events, then nothing, ever: a vLLM stopping on SIGTERM."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in sse_events("llama-8b-served", True)[:2]:
            yield piece
        await asyncio.Event().wait()


def _stalls_mid_stream(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_StallsMidStream()
    )


def test_a_stream_silent_mid_way_is_given_up_after_the_idle_timeout(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _stalls_mid_stream), stream_idle_timeout_s=0.05)

    bodies = [gw.chat(STREAM).text for _ in range(6)]

    stalled = [body for body in bodies if "sent nothing for 0.05 s mid-stream" in body]
    assert len(stalled) == 2  # round-robin: every third request went to engine-1
    assert all('"upstream_error"' in body and "data: [DONE]" in body for body in stalled)
    assert all('"content"' in body for body in stalled)  # what came before still came
    # A pause is no proof of a dead engine (vLLM pauses the streams it preempts when short
    # of KV cache): not held against the endpoint; a stopped engine fails its scrapes.
    assert gw.service.engines.ejections("e1") == 0
    failed = [r for _id, r in gw.usage.read(100) if r.endpoint == "http://engine-1"]
    assert [(r.status, r.error_code) for r in failed] == [(502, "upstream_error")] * 2


def _event_stream(stream: httpx.AsyncByteStream) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


class _Ejection:
    """Ejects engine-1's endpoint (three failed scrapes in a row) when called: what the gateway
    does to an engine that stopped. ``engines`` is set once the gateway is built."""

    engines: EngineState | None = None

    def __call__(self) -> None:
        assert self.engines is not None
        for _ in range(3):
            self.engines.failed("e1", "scrape: ConnectError")


class _StopsMidStream(httpx.AsyncByteStream):
    """Sends its first two events, then its engine stops (silent, the connection open) and the
    gateway ejects its endpoint; or, ``flowing``, the rest comes after the ejection, each event
    after a pause shorter than the ejected stream's limit (scrapes that time out under load
    eject an engine that still runs)."""

    def __init__(self, eject: Callable[[], None], *, flowing: bool = False) -> None:
        self.eject, self.flowing = eject, flowing

    async def __aiter__(self) -> AsyncIterator[bytes]:
        events = sse_events("llama-8b-served", True)
        for piece in events[:2]:
            yield piece
        self.eject()
        if not self.flowing:
            await asyncio.Event().wait()
        for piece in events[2:]:
            await asyncio.sleep(0.01)
            yield piece


@pytest.mark.parametrize("flowing", [False, True])
def test_a_stream_its_ejected_endpoint_leaves_silent_ends_soon_and_one_still_flowing_does_not(
    engine_gateway: Callable[..., Gateway], flowing: bool
) -> None:
    eject = _Ejection()

    def stops(request: httpx.Request) -> httpx.Response:
        return _event_stream(_StopsMidStream(eject, flowing=flowing))

    # Without the ejection, the silent stream would end after the 10 s idle timeout.
    gw = engine_gateway(
        failing_on("engine-1", stops), stream_idle_timeout_s=10, ejected_stream_idle_s=0.5
    )
    eject.engines = gw.service.engines

    body = gw.chat(STREAM).text

    assert gw.hosts() == ["engine-1"]
    assert gw.service.engines.ejections("e1") == 1
    assert '"content"' in body and body.endswith("data: [DONE]\n\n")
    [record] = [record for _id, record in gw.usage.read(10)]
    if flowing:
        assert "error" not in body
        assert (record.status, record.error_code) == (200, None)
    else:
        assert "taken out of service and sent nothing for 0.5 s mid-stream" in body
        assert (record.status, record.error_code) == (502, "upstream_error")


class _StopsBeforeTheFirstEvent(httpx.AsyncByteStream):
    """Its engine stops (a vLLM on SIGTERM: the connection stays open, silent) and, meanwhile,
    the gateway ejects its endpoint (its scrapes fail)."""

    def __init__(self, eject: Callable[[], None]) -> None:
        self.eject = eject

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.eject()
        await asyncio.Event().wait()
        yield b""  # pragma: no cover - never reached


def test_a_stream_waiting_for_its_first_event_moves_on_when_its_endpoint_is_ejected(
    engine_gateway: Callable[..., Gateway],
) -> None:
    eject = _Ejection()

    def stops(request: httpx.Request) -> httpx.Response:
        return _event_stream(_StopsBeforeTheFirstEvent(eject))

    gw = engine_gateway(failing_on("engine-1", stops))
    eject.engines = gw.service.engines

    response = gw.chat(STREAM)

    # The client never waited on the stopped engine: the next endpoint answered, whole.
    assert response.status_code == 200
    assert '"content"' in response.text and "error" not in response.text
    assert gw.hosts() == ["engine-1", "engine-2"]
    assert gw.service.engines.ejections("e1") == 1
    # The three failures that ejected it, not a fourth for the stream it abandoned.
    [e1] = [h for h in gw.service.engines.health_report() if h.endpoint == "e1"]
    assert e1.request_failures == 3
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.endpoint) == (200, "http://engine-2")


def test_a_stream_failing_before_its_first_event_on_the_last_endpoint_counts_too(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(_dies_before_the_first_event)

    # Round-robin puts each endpoint last once: three failures each, counting the last one's.
    statuses = [gw.chat(STREAM).status_code for _ in range(3)]

    assert statuses == [502] * 3
    assert len(gw.hosts()) == 9
    assert [gw.service.engines.ejections(e) for e in ("e1", "e2", "e3")] == [1, 1, 1]


class _SilentAfterHead(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        raise httpx.ReadTimeout("no first event")
        yield b""  # pragma: no cover - makes this an async generator


def _silent_after_the_head(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=_SilentAfterHead()
    )


def test_a_stream_silent_before_its_first_event_everywhere_is_a_retryable_502(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(_silent_after_the_head)

    response = gw.chat(STREAM)

    # Not the plain request's 504 ("may still be generating; lower max_tokens or stream", do
    # not retry): a stream that sent no token has nothing running twice if retried.
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert "x-should-retry" not in response.headers
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.error_code) == (502, "upstream_error")


class _StoppedEngine:
    """engine-1 takes the plain request and stops (a vLLM on SIGTERM: the connection stays open
    and no answer comes) while the gateway ejects ``ejected`` (their scrapes fail)."""

    def __init__(self, engine_gateway: Callable[..., Gateway], ejected: tuple[str, ...]) -> None:
        self.ejected = ejected
        self.closed = False
        handler = cast(Handler, failing_on("engine-1", self._stops))  # type: ignore[arg-type]
        self.gw = engine_gateway(handler)

    async def _stops(self, request: httpx.Request) -> httpx.Response:
        for endpoint in self.ejected:
            for _ in range(3):
                self.gw.service.engines.failed(endpoint, "scrape: ConnectError")
        try:
            await asyncio.Event().wait()
        finally:
            self.closed = True  # cancelled: the gateway let go of the connection
        raise AssertionError("never answered")  # pragma: no cover


def test_a_plain_request_waiting_for_its_answer_moves_on_when_its_endpoint_is_ejected(
    engine_gateway: Callable[..., Gateway],
) -> None:
    stopped = _StoppedEngine(engine_gateway, ejected=("e1",))
    gw = stopped.gw

    response = gw.chat()

    # Not the read timeout's 504 minutes later: the next endpoint answered, and only it is
    # metered; the stopped engine's connection was closed, which makes a live vLLM abort.
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    assert gw.hosts() == ["engine-1", "engine-2"]
    assert stopped.closed
    assert gw.service.engines.ejections("e1") == 1
    [record] = [record for _id, record in gw.usage.read(10)]
    assert (record.status, record.endpoint) == (200, "http://engine-2")


def test_a_failover_skips_an_endpoint_ejected_while_the_request_waited(
    engine_gateway: Callable[..., Gateway],
) -> None:
    stopped = _StoppedEngine(engine_gateway, ejected=("e1", "e2"))

    response = stopped.gw.chat()

    # engine-2, next in the order, was ejected meanwhile and not tried: it might hold the
    # request as engine-1 did.
    assert response.status_code == 200
    assert stopped.gw.hosts() == ["engine-1", "engine-3"]


class _EjectedAsItsIdleTimerFires(httpx.AsyncByteStream):
    """Sends its first two events, then stays silent; the loop is blocked past the stream's
    idle deadline so that, in one turn of the loop, the idle timer fires first and the ejection
    (a scrape failing, another request's failure) comes before the stream's task resumes."""

    def __init__(self, eject: Callable[[], None], *, idle_s: float) -> None:
        self.eject, self.idle_s = eject, idle_s
        self.raised: list[BaseException] = []

    def _eject(self) -> None:
        try:
            self.eject()
        except BaseException as exc:  # what the scraper or the other request would get
            self.raised.append(exc)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        events = sse_events("llama-8b-served", True)
        for piece in events[:2]:
            yield piece
        asyncio.get_running_loop().call_later(self.idle_s * 1.5, self._eject)
        # Blocks the loop on purpose: the stream's idle timer is armed, both are due after.
        time.sleep(self.idle_s * 2)  # noqa: ASYNC251
        await asyncio.Event().wait()
        yield b""


def test_an_ejection_just_as_a_stream_idle_timer_fires_raises_nothing_to_the_ejector(
    engine_gateway: Callable[..., Gateway],
) -> None:
    eject = _Ejection()
    streams: list[_EjectedAsItsIdleTimerFires] = []

    def stops(request: httpx.Request) -> httpx.Response:
        streams.append(_EjectedAsItsIdleTimerFires(eject, idle_s=0.2))
        return _event_stream(streams[-1])

    gw = engine_gateway(failing_on("engine-1", stops), stream_idle_timeout_s=0.2)
    eject.engines = gw.service.engines

    body = gw.chat(STREAM).text

    assert "sent nothing for 0.2 s mid-stream" in body
    assert streams[0].raised == []
    assert gw.service.engines.ejections("e1") == 1
