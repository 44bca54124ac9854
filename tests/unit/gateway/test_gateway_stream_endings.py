"""A stream or request the gateway ends, not its engine: the key revoked (or merely expired)
mid-way, and the gateway stopping with streams and requests in flight."""

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
)
from tests.unit.gateway.test_gateway_streams import _event_stream
from tests.unit.gateway.upstreams import chat_any, sse_events

from support.json_logs import json_log_lines
from trunkline.gateway import stream_relay
from trunkline.metering.outcomes import BILLED_BY_DEFAULT, outcome_of


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
    gw: Gateway, request: dict[str, object], under_way: asyncio.Event | None = None,
    *, client_leaves: bool = False, origin: str | None = None,
) -> list[dict[str, object]]:  # fmt: skip
    """What the gateway sends for ``request`` when the server stops once ``under_way`` is set
    (None: once its answer's first bytes went out):
    uvicorn, its drain time out, cancels the request's task. No exception may leave the app
    (uvicorn would log "Exception in ASGI application" with its traceback). With
    ``client_leaves`` the client disconnects then instead, and the server runs on."""
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
            *([(b"origin", origin.encode())] if origin else []),
        ],
    }  # fmt: skip
    sent: list[dict[str, object]] = []

    async def serve_then_stop() -> None:
        bodies = iter([{"type": "http.request", "body": body, "more_body": False}])

        async def receive() -> dict[str, object]:
            if (message := next(bodies, None)) is not None:
                return message
            if client_leaves:
                await answering.wait()
            else:
                await asyncio.Event().wait()  # the client stays: the server stops
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                answering.set()

        answering = under_way or asyncio.Event()
        task = asyncio.create_task(gw.client.app(scope, receive, send))  # type: ignore[arg-type]
        await answering.wait()
        if not client_leaves:
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
    # Metered as what its client was told, the gateway's failure: it was 499 client_closed,
    # billed as if the client had hung up.
    [(_id, record)] = gw.usage.read(10)
    assert (record.request_id, record.status, record.error_code) == (
        cut.request_id,
        503,
        "gateway_stopped",
    )
    assert outcome_of(record.status) not in BILLED_BY_DEFAULT


def test_a_request_whose_client_leaves_before_its_answer_is_still_client_closed(
    engine_gateway: Callable[..., Gateway],
) -> None:
    reached = asyncio.Event()

    async def generating(request: httpx.Request) -> httpx.Response:
        reached.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    gw = engine_gateway(generating)
    sent = _stopped_while_served(gw, CHAT, reached, client_leaves=True)

    assert sent[0]["status"] == 499
    [(_id, record)] = gw.usage.read(10)
    assert (record.status, record.error_code) == (499, "client_closed")


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


def test_a_browser_page_can_read_the_503_of_a_request_cut_at_shutdown(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """The 503 is sent outside Litestar's CORS middleware: it came without CORS headers, so
    the browser hid it (and its retry-after and x-request-id) from the page, as a network
    error. It carries them now, as every other answer."""
    reached = asyncio.Event()

    async def generating(request: httpx.Request) -> httpx.Response:
        reached.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    page = "https://chat.acme.example"
    gw = engine_gateway(generating, cors_origins=[page])
    sent = _stopped_while_served(gw, CHAT, reached, origin=page)

    assert sent[0]["status"] == 503
    headers = {
        name.decode(): value.decode()
        for name, value in cast("list[tuple[bytes, bytes]]", sent[0]["headers"])
    }
    assert headers["access-control-allow-origin"] == page
    exposed = headers["access-control-expose-headers"]
    assert "x-request-id" in exposed and "retry-after" in exposed


def test_a_streams_log_lines_name_its_request_tenant_and_key(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """A stream's events are relayed after its handler returned: its lines (here, its key
    revoked mid-way) carry the request's ids as every other line about it does."""
    world, gateway = default_world(), []

    async def revoke() -> None:
        del world.keys[gateway[0].key.split("_")[1]]
        world.publish()
        await gateway[0].service.holder.refresh()

    events = sse_events("llama-8b-served", with_usage=False)
    gw = engine_gateway(lambda request: _event_stream(_RevokedMidway(events, revoke)), world=world)
    gateway.append(gw)
    with json_log_lines() as lines:
        answer = gw.client.post(
            "/v1/chat/completions",
            json=STREAM,
            headers={"authorization": f"Bearer {gw.key}", "x-client-request-id": "job-7"},
        )
        [line] = [r for r in lines() if r["msg"] == "stream ended: its API key was revoked"]
    assert "invalid_api_key" in answer.text
    assert line["request_id"] == answer.headers["x-request-id"]
    assert line["client_request_id"] == "job-7"
    assert (line["tenant"], line["key_id"]) == ("acme", gw.key.split("_")[1])


def test_an_unhandled_errors_line_names_its_request_tenant_and_key(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """The one line an operator has of a 500 is found by the x-request-id its client got."""

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a defect of the gateway's")

    gw = engine_gateway(broken)
    with json_log_lines() as lines:
        answer = gw.client.post(
            "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {gw.key}", "x-client-request-id": "job-8"},
        )
        [line] = [r for r in lines() if r["msg"] == "unhandled error in the gateway"]
    assert answer.status_code == 500
    assert "RuntimeError: a defect of the gateway's" in line["exc"]
    assert line["request_id"] == answer.headers["x-request-id"]
    assert line["client_request_id"] == "job-8"
    assert (line["tenant"], line["key_id"]) == ("acme", gw.key.split("_")[1])
