"""The engines' connection pool keeps its slots when a request waiting for one is cancelled
just as a new connection is made for it (encode/httpcore#1093): the leak that, repeated, left
a gateway answering ``gateway_busy`` while its engines sat idle."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import httpx
import pytest
from httpcore._async.connection import AsyncHTTPConnection
from httpcore._async.connection_pool import AsyncPoolRequest
from tests.unit.gateway.conftest import SECRET, default_world

from trunkline.apps.gateway import create_gateway_app, scrape_client
from trunkline.gateway.connection_pool import ReclaimingConnectionPool, engine_transport
from trunkline.gateway.service import GatewayService
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings

Talk = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(talk: Talk, path: str) -> AsyncIterator[str]:
    """A loopback HTTP server holding each connection to ``talk``; the URL of ``path`` on it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await talk(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}{path}"


@pytest.fixture
async def engine() -> AsyncIterator[str]:
    """An HTTP server that answers every request with the first part of a chunked body and
    then holds the connection until the client closes it (a stream being generated)."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # until the client closes

    async with serving(talk, "/v1/chat/completions") as url:
        yield url


async def cancel_as_connection_is_handed_over(client: httpx.AsyncClient, url: str) -> None:
    """With the only connection held by a stream, a second request waits for it; the stream
    is closed half-read (so is its connection: a new one is made for the waiting request) and
    the waiting request is cancelled before it could run, as when its client leaves."""
    holding = await client.send(client.build_request("POST", url), stream=True)
    waiting = asyncio.create_task(client.send(client.build_request("POST", url), stream=True))
    await queued(pool_of(client), 2)  # the second request waits for the connection
    await holding.aclose()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def queued(pool: httpcore.AsyncConnectionPool, requests: int) -> None:
    """Once the pool holds ``requests`` requests (the event loop is given turns until then)."""
    for _ in range(1000):
        if len(pool._requests) >= requests:
            return
        await asyncio.sleep(0)  # a turn of the event loop, not a wait
    raise AssertionError(f"{requests} requests never reached the pool")


def pool_of(client: httpx.AsyncClient) -> httpcore.AsyncConnectionPool:
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    return pool


LIMITS = httpx.Limits(max_connections=1, max_keepalive_connections=1)


async def test_httpx_own_pool_loses_the_slot(engine: str) -> None:
    """What the gateway's pool guards against, shown on httpx's own: the slot stays taken by
    a connection nobody opens (were this fixed upstream, this test would say so)."""
    async with httpx.AsyncClient(limits=LIMITS) as client:
        await cancel_as_connection_is_handed_over(client, engine)
        assert [c.info() for c in pool_of(client).connections] == ["CONNECTING"]
        with pytest.raises(httpx.PoolTimeout):
            await client.post(engine, timeout=httpx.Timeout(5.0, pool=0.0))


async def test_the_gateway_pool_gives_the_slot_back(engine: str) -> None:
    transport = engine_transport(LIMITS)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        assert isinstance(pool_of(client), ReclaimingConnectionPool)
        await cancel_as_connection_is_handed_over(client, engine)
        assert pool_of(client).connections == []
        async with client.stream("POST", engine) as answer:
            assert answer.status_code == 200
            assert await anext(answer.aiter_raw()) == b"hello"


async def test_a_request_queued_behind_the_orphan_gets_the_slot(engine: str) -> None:
    """A third request already waiting when the second is cancelled is handed the slot the
    orphan held, not left waiting for another request to end."""
    transport = engine_transport(LIMITS)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        holding = await client.send(client.build_request("POST", engine), stream=True)
        second = asyncio.create_task(client.send(client.build_request("POST", engine)))
        third = asyncio.create_task(client.send(client.build_request("POST", engine), stream=True))
        pool = pool_of(client)
        await queued(pool, 3)
        await holding.aclose()
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        answer = await third
        try:
            assert answer.status_code == 200
            assert [c.info() for c in pool.connections] != ["CONNECTING"]
        finally:
            await answer.aclose()


async def test_a_request_cancelled_between_connecting_and_sending_gives_the_slot_back(
    engine: str,
) -> None:
    """A request cancelled once its new connection is open and before it sent anything on it
    (the connection's one turn of the event loop at the start of a request) left that
    connection open and unused, owned by no request: a slot lost for good, as a connection
    never opened was."""
    transport = engine_transport(LIMITS)
    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        pool = pool_of(client)
        sending = asyncio.create_task(client.post(engine))
        await opened_and_unused(pool)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        async with client.stream("POST", engine, timeout=httpx.Timeout(5.0, pool=0.0)) as answer:
            assert answer.status_code == 200
            assert await anext(answer.aiter_raw()) == b"hello"


async def opened_and_unused(pool: httpcore.AsyncConnectionPool) -> None:
    """Once the pool holds a connection open and not yet used (HTTP/1.1's ``NEW``)."""
    for _ in range(1000):
        if any(", NEW, " in connection.info() for connection in pool.connections):
            return
        await asyncio.sleep(0)  # a turn of the event loop, not a wait
    raise AssertionError("no connection was ever open and unused")


@pytest.fixture
async def answering_engine() -> AsyncIterator[str]:
    """An HTTP server answering each request at once, keeping its connection alive."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with serving(talk, "/v1/models") as url:
        yield url


@pytest.mark.parametrize("reused", [False, True], ids=["new connection", "reused connection"])
async def test_a_request_cancelled_at_any_point_gives_its_slot_back(
    answering_engine: str, reused: bool
) -> None:
    """A request cancelled at each turn of the event loop in its life in turn, from waiting for
    a connection to closing the answer read in full: the pool is left holding no request and
    no connection busy, and its one slot serves the next request. Cancelled as it closed its
    answer, a request stayed in the pool and its connection busy for good."""
    for turns in range(40):
        transport = engine_transport(LIMITS)
        async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
            pool = pool_of(client)
            if reused:
                await client.get(answering_engine)
            sending = asyncio.create_task(client.get(answering_engine))
            for _ in range(turns):
                await asyncio.sleep(0)  # a turn of the event loop, not a wait
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            assert pool._requests == [], f"cancelled after {turns} turns"
            assert all(c.is_idle() or c.is_closed() for c in pool.connections), turns
            answer = await client.get(answering_engine, timeout=httpx.Timeout(5.0, pool=0.0))
            assert answer.text == "ok"


def test_the_gateway_sends_and_scrapes_through_reclaiming_pools() -> None:
    settings = GatewaySettings(max_connections=7)
    app = create_gateway_app(
        source=default_world().store,
        emitter=InMemoryUsageStream(),
        server_secret=SECRET,
        settings=settings,
    )
    service: GatewayService = app.state.gateway
    sending = pool_of(service.client)
    assert isinstance(sending, ReclaimingConnectionPool)
    assert sending._max_connections == 7
    scraping = pool_of(scrape_client(settings, None))
    assert isinstance(scraping, ReclaimingConnectionPool)
    assert scraping._max_connections == settings.engines.scrape_concurrency


def test_an_httpcore_release_not_read_is_left_as_httpx_made_it_and_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool's subclass reads httpcore's private state (its requests' ``connection``, a
    connection's ``info()``) as 1.0.9 keeps it. A later release keeping it otherwise had the
    subclass all the same, so long as two lists were still there: it then reclaimed nothing,
    unsaid, or failed every request to the engines on an attribute gone."""
    monkeypatch.setattr(httpcore, "__version__", "1.0.10")
    with caplog.at_level(logging.WARNING, logger="trunkline.gateway.connection_pool"):
        transport = engine_transport(LIMITS)
    assert type(transport._pool) is httpcore.AsyncConnectionPool  # type: ignore[attr-defined]
    assert "not reclaimed" in caplog.text


class _Connection:
    """A connection in a given state, as a pool's hand-out reads it: httpcore 1.0.9's
    ``AsyncHTTPConnection`` over HTTP/1.1 (``new``: open, no request sent yet) or HTTP/2
    (``shared``: carrying streams, open to more). An expired one is idle (HTTP/1.1 sets the
    expiry as a connection turns idle; a server's close is seen only on an idle one), a failed
    one (its connect failed) closed, idle and expired at once."""

    STATES = ("idle", "active", "shared", "closed", "failed", "expired", "connecting", "new")

    def __init__(self, rng: random.Random, origins: list[httpcore.Origin]) -> None:
        self.origin = rng.choice(origins)
        self.state = rng.choice(self.STATES)

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == self.origin

    def is_available(self) -> bool:
        return self.state in ("idle", "shared", "expired")

    def is_idle(self) -> bool:
        return self.state in ("idle", "failed", "expired")

    def is_closed(self) -> bool:
        return self.state in ("closed", "failed")

    def has_expired(self) -> bool:
        return self.state in ("failed", "expired")


def _hand_out(
    pool: httpcore.AsyncConnectionPool, connections: list[Any], requests: list[Any]
) -> tuple[list[Any], list[Any], list[Any]]:
    """What a hand-out leaves: the connections kept, those to close, each request's connection
    (the new ones made as ``"new <origin>"``)."""
    pool._connections = list(connections)
    pool._requests = requests
    closing = pool._assign_requests_to_connections()

    def named(connection: Any) -> Any:
        if isinstance(connection, AsyncHTTPConnection):
            return f"new {connection._origin}"
        return connection

    owners = [named(request.connection) for request in requests]
    return [named(c) for c in pool._connections], closing, owners


@pytest.mark.parametrize("seed", range(300))
async def test_a_hand_out_decides_as_httpcores_own_but_for_orphans(seed: int) -> None:
    """The pool's linear hand-out keeps, closes and assigns what httpcore's own does, orphans
    aside: those it closes, and httpcore keeps for good. With fewer connections kept alive than
    held, both close idle ones while the pool holds more than that many connections, busy or
    not; httpcore also counts the closed and expired ones it has not reached yet (given first
    to it here, it counts none)."""
    rng = random.Random(seed)
    origins = [httpcore.Origin(b"http", f"engine-{i}".encode(), 8000) for i in range(3)]
    most = rng.choice([None, rng.randint(1, 8)])
    alive = rng.choice([most, rng.randint(0, most or 8)])
    held = rng.choice([most or 8, rng.randint(0, most or 8)])  # full half the time
    connections: list[Any] = [_Connection(rng, origins) for _ in range(held)]
    in_flight = [c for c in connections if c.state in ("active", "shared", "connecting", "new")]
    orphans = {id(c) for c in in_flight if rng.random() < 0.3 and c.state != "shared"}

    def requests() -> list[Any]:
        made = []
        for connection in in_flight:
            if id(connection) not in orphans:
                request = AsyncPoolRequest(httpcore.Request("POST", "http://x/"))
                request.connection = connection
                made.append(request)
        for _ in range(rng.randint(0, 8)):
            origin = rng.choice(origins)
            url = f"http://{origin.host.decode()}:{origin.port}/v1/chat/completions"
            made.append(AsyncPoolRequest(httpcore.Request("POST", url)))
        return made

    state = rng.getstate()
    ours = _hand_out(
        ReclaimingConnectionPool(max_connections=most, max_keepalive_connections=alive),
        connections,
        requests(),
    )
    rng.setstate(state)
    gone = [c for c in connections if c.is_closed() or c.has_expired()]
    theirs = _hand_out(
        httpcore.AsyncConnectionPool(max_connections=most, max_keepalive_connections=alive),
        gone + [c for c in connections if c not in gone and id(c) not in orphans],
        requests(),
    )
    kept, closing, owners = ours
    assert orphans <= {id(c) for c in closing}
    assert (kept, [c for c in closing if id(c) not in orphans], owners) == theirs


class _Counted(_Connection):
    """A connection that counts what a hand-out asks it."""

    def __init__(self, rng: random.Random, origins: list[httpcore.Origin], state: str) -> None:
        super().__init__(rng, origins)
        self.state = state
        self.asked: collections.Counter[str] = collections.Counter()

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        self.asked[f"can_handle_request {origin}"] += 1
        return super().can_handle_request(origin)

    def is_available(self) -> bool:
        self.asked["is_available"] += 1
        return super().is_available()

    def is_idle(self) -> bool:
        self.asked["is_idle"] += 1
        return super().is_idle()


async def test_a_full_pool_asks_each_connection_once_however_many_requests_wait() -> None:
    """With the pool full (the gateway at its ``max_connections``), each request waiting for a
    connection had every connection asked whether it could take it, at each request's start and
    end: 100 waiting behind 1,000 connections held the event loop 20 ms a
    hand-out, 500 waiting 130 ms, stalling every stream relayed. Each connection is now asked
    once per origin the waiting requests go to."""
    rng = random.Random(0)
    origins = [httpcore.Origin(b"http", f"engine-{i}".encode(), 8000) for i in range(3)]
    connections = [_Counted(rng, origins, rng.choice(["active", "idle"])) for _ in range(50)]
    pool = ReclaimingConnectionPool(max_connections=50)
    requests = []
    for connection in connections:
        request = AsyncPoolRequest(httpcore.Request("POST", "http://x/"))
        request.connection = connection
        requests.append(request)
    for _ in range(100):
        origin = rng.choice(origins)
        url = f"http://{origin.host.decode()}:{origin.port}/v1/chat/completions"
        requests.append(AsyncPoolRequest(httpcore.Request("POST", url)))
    pool._connections = list(connections)
    pool._requests = requests
    pool._assign_requests_to_connections()
    asked = collections.Counter[str]()
    for connection in connections:
        asked |= connection.asked
    assert max(asked[f"can_handle_request {origin}"] for origin in origins) == 1
    assert asked["is_available"] <= len(origins)
    assert asked["is_idle"] <= 3  # sorting out closed, idle and surplus ones; then handing out
