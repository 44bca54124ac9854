"""A request when its engine fails or stops: retried elsewhere before the first byte (a
stream's first event), a stream ended with an error event after it, and what counts against
the endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import cast

import httpx
import msgspec
import pytest
from tests.unit.gateway.conftest import default_world
from tests.unit.gateway.engines_support import (
    CHAT,
    STREAM,
    Gateway,
    Handler,
    failing_on,
)
from tests.unit.gateway.upstreams import Chunks, chat_any, sse_events

from trunkline.gateway import stream_relay
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


class _RevokedMidway(httpx.AsyncByteStream):
    """A stream whose key is revoked (a new snapshot without it) after its first two events."""

    def __init__(self, events: list[bytes], revoke: Callable[[], object]) -> None:
        self.events = events
        self.revoke = revoke

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, event in enumerate(self.events):
            if index == 2:
                await cast(asyncio.Future[object], self.revoke())
            yield event


def test_a_stream_whose_key_is_revoked_ends_at_the_next_event_and_is_billed_as_generated(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """A leaked key revoked mid-stream stops generating then, not at the end of its longest
    answer."""
    world, gateway = default_world(), []

    async def revoke() -> None:
        del world.keys[gateway[0].key.split("_")[1]]
        world.publish()
        await gateway[0].service.holder.refresh()

    events = sse_events("llama-8b-served", with_usage=False)
    gw = engine_gateway(
        lambda request: _event_stream(_RevokedMidway(events, revoke)),
        world=world,
    )
    gateway.append(gw)
    body = gw.chat(STREAM).text
    sent = [line for line in body.split("\n\n") if line.startswith("data: ")]
    assert sent[:2] == [e.decode().strip() for e in events[:2]]  # what came before still comes
    assert '"code":"invalid_api_key"' in sent[2] and sent[3] == "data: [DONE]" and len(sent) == 4
    [(_id, record)] = gw.usage.read(10)
    # the token read when the revocation was seen counts too: the engine generated it
    assert (record.status, record.error_code, record.completion_tokens) == (499, "key_revoked", 2)


def test_a_stream_whose_key_merely_expired_meanwhile_runs_to_its_end(
    engine_gateway: Callable[..., Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired key leaves the snapshot at its next publication, for any change: a stream it
    started while valid is not cut as revoked."""
    world, gateway = default_world(), []

    async def expire() -> None:
        later = time.time() + 2 * 3600  # past the key's expiry
        clock = SimpleNamespace(
            time=lambda: later, perf_counter=time.perf_counter, monotonic=time.monotonic
        )
        monkeypatch.setattr(stream_relay, "time", clock)
        del world.keys[gateway[0].key.split("_")[1]]  # as the next publication leaves it out
        world.publish()
        await gateway[0].service.holder.refresh()

    events = sse_events("llama-8b-served", with_usage=False)
    key = world.add_key(expires_at=time.time() + 3600)
    gw = engine_gateway(
        lambda request: _event_stream(_RevokedMidway(events, expire)),
        world=world,
    )
    gw = dataclasses.replace(gw, key=key)
    gateway.append(gw)
    body = gw.chat(STREAM).text
    assert "invalid_api_key" not in body and body.rstrip().endswith("data: [DONE]")
    [(_id, record)] = gw.usage.read(10)
    assert record.status == 200


class _Endless(httpx.AsyncByteStream):
    """An engine that sends its first events, then decodes for ever."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event
        await asyncio.Event().wait()
        yield b""  # never reached


def test_a_gateway_stopping_meters_the_streams_it_cuts_before_its_usage_emitter_closes(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """Once its drain time is out, uvicorn cancels what is left and goes on to shut down: a
    stream's generator may not run its own ``finally`` before the emitter closes."""
    first = sse_events("llama-8b-served", with_usage=False)[:2]
    gw = engine_gateway(lambda request: _event_stream(_Endless(first)))
    service = gw.service

    async def cut_mid_stream() -> int:
        principal = service.authenticate(f"Bearer {gw.key}")
        body = httpx.Request("POST", "/", json=STREAM).content
        reply = await service.handle("chat", body, principal, "req-cut")
        assert reply.events is not None
        await anext(reply.events)  # the client has its first event; the engine goes on
        cut = service.meter_the_unfinished()
        await reply.events.aclose()
        return cut

    assert gw.client.blocking_portal.call(cut_mid_stream) == 1
    [(_id, record)] = gw.usage.read(10)
    assert (record.request_id, record.status, record.error_code) == (
        "req-cut",
        499,
        "gateway_stopped",
    )
    assert service.meter_the_unfinished() == 0  # nothing twice


def _stopped_while_served(
    gw: Gateway, request: dict[str, object], under_way: asyncio.Event | None = None
) -> list[dict[str, object]]:
    """What the gateway sends for ``request`` when the server stops once ``under_way`` is set
    (None: once its answer's first bytes went out):
    uvicorn, its drain time out, cancels the request's task. No exception may leave the app
    (uvicorn would log "Exception in ASGI application" with its traceback)."""
    body = msgspec.json.encode(request)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"gateway"), (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {gw.key}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }  # fmt: skip
    sent: list[dict[str, object]] = []

    async def serve_then_stop() -> None:
        bodies = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, object]:
            if (message := next(bodies, None)) is not None:
                return message
            await asyncio.Event().wait()  # the client stays: the server stops
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                answering.set()

        answering = under_way or asyncio.Event()
        task = asyncio.create_task(gw.client.app(scope, receive, send))  # type: ignore[arg-type]
        await answering.wait()
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")  # as uvicorn
        await task
        gw.service.meter_the_unfinished()  # the lifespan's shutdown, as before

    gw.client.blocking_portal.call(serve_then_stop)
    return sent


def test_a_stream_cut_at_shutdown_ends_cleanly_and_is_said_so_in_one_line(
    engine_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    """Once the drain time is out uvicorn cancels the requests left: a stream's cancellation
    came out of the app, and uvicorn logged "Exception in ASGI application" with a traceback
    (and cut the client off without an end). Now the stream ends with an error event and
    [DONE], one line says it was cut at shutdown, and it is metered as before."""
    first = sse_events("llama-8b-served", with_usage=False)[:2]
    gw = engine_gateway(lambda request: _event_stream(_Endless(first)))
    with caplog.at_level(logging.INFO):  # its head and first event went out
        sent = _stopped_while_served(gw, STREAM)

    streamed = b"".join(cast("bytes", m.get("body", b"")) for m in sent[1:])
    assert sent[0]["status"] == 200
    assert sent[-1]["more_body"] is False  # ended, not cut off
    assert streamed.endswith(b"data: [DONE]\n\n")
    error = msgspec.json.decode(streamed.split(b"data: ")[-2])["error"]
    assert error["code"] == "gateway_stopped"
    request_id = dict(cast("list[tuple[bytes, bytes]]", sent[0]["headers"]))[b"x-request-id"]
    [cut] = [r for r in caplog.records if "cut" in r.getMessage()]
    assert "stream cut" in cut.getMessage() and cut.levelno == logging.WARNING
    assert cut.request_id == request_id.decode()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    [(_id, record)] = gw.usage.read(10)
    assert (record.status, record.completion_tokens) == (499, 1)  # the token it streamed


def test_a_request_unanswered_at_shutdown_gets_a_503_and_one_line(
    engine_gateway: Callable[..., Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    """A plain request whose engine was still generating: uvicorn answered the cancellation
    with its own 500 "Internal Server Error" in plain text, and a traceback."""

    reached = asyncio.Event()

    async def generating(request: httpx.Request) -> httpx.Response:
        reached.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    gw = engine_gateway(generating)
    with caplog.at_level(logging.INFO):
        sent = _stopped_while_served(gw, CHAT, reached)

    assert sent[0]["status"] == 503
    assert msgspec.json.decode(cast("bytes", sent[1]["body"]))["error"]["code"] == (
        "gateway_stopped"
    )
    [cut] = [r for r in caplog.records if "cut" in r.getMessage()]
    assert "request cut before its answer" in cut.getMessage()
    assert cut.request_id.startswith("req-")
    # The id to quote, as on every other answer: the one its log line and usage record carry.
    headers = dict(cast("list[tuple[bytes, bytes]]", sent[0]["headers"]))
    assert headers[b"x-request-id"].decode() == cut.request_id
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_requests_refused_before_they_were_sent_leave_nothing_to_meter_at_shutdown(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """Their meters stayed in the set of unfinished ones for the life of the process, each
    holding its body, and were metered as cut when it stopped."""
    world = default_world()
    for name, pool in world.pools.items():
        world.pools[name] = msgspec.structs.replace(pool, endpoints=())
    gw = engine_gateway(chat_any, world=world)
    assert [gw.chat().status_code for _ in range(3)] == [503] * 3  # no endpoint
    assert gw.service.meter_the_unfinished() == 0
