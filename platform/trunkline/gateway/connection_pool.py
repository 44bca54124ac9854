"""The gateway's connections to the engines: httpx's transport, with connections orphaned by a
cancelled request given back to the pool.

httpcore 1.0.9 (the current release) loses a connection slot for good when a request waiting
for a connection is cancelled in the instant after the pool made a new connection for it and
before it started to use it (encode/httpcore#1093), or in the instant after it opened that
connection and before it sent anything on it (the connection's lock yields a turn): the
connection is neither idle, closed nor expired, so nothing reclaims it; or in the instant its
answer, read in full, was being closed: the request stays in the pool, its connection busy.
Once ``max_connections`` of them are lost every request waits the pool timeout (the gateway
answers 503 ``gateway_busy`` while its engines sit idle).
The gateway cancels such waits all the time: a client leaving, an endpoint ejected while a
request waits on it (``upstream.unless_ejected``), a scrape timing out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

import httpcore
import httpx
from httpcore._async.connection_pool import PoolByteStream

log = logging.getLogger(__name__)

_READ_RELEASES: Final = frozenset({"1.0.9"})
"""The httpcore releases whose pool and connection this module was checked against: how they
keep their requests (each ``connection``) and connections, an answer's body its request and
pool, and that a connection no request holds is idle or closed unless orphaned. Another
release may keep them otherwise (an attribute gone would fail every request), so its pool is
left as httpx made it, with the warning, until it is read and added here."""


class ReclaimingConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, closing the connections that no request holds and that are not idle
    (made or opened for a request cancelled before it used them: nothing else would ever
    release them), and handing out connections in time linear in the pool's size.

    httpcore 1.0.9 counts every connection once per idle one at each hand-out (a request's
    start and end): with the gateway's 1,000 connections, after a burst left a few hundred
    idle, each request held the event loop for milliseconds (200 idle: 2.6 ms a hand-out; 500:
    22 ms; 1,000: 66 ms, measured on this machine's core), stalling every stream it relays;
    and, the pool full, asks every connection once per request waiting (1,000 busy: 20 ms a
    hand-out with 100 waiting, 120 ms with 500; ours 0.8 and 1.5 ms, one ad-hoc run;
    ``trunkline bench pool`` times both side by side).
    The rules are httpcore's: closed connections are forgotten, expired ones closed, idle ones
    closed while the pool holds more than ``max_keepalive_connections`` connections, busy or
    idle (the gateway keeps as many as it may hold, so none are; httpcore also counts the
    closed and expired ones it has not yet removed, so may close more), and each queued
    request, in arrival order, gets an available connection to its origin (the same one to
    several: all but the first find it taken and queue again), else a new one while under
    ``max_connections``, else a new one in place of an idle one, else waits."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        response = await super().handle_async_request(request)
        if isinstance(response.stream, PoolByteStream):
            response.stream = _LettingGo(response.stream)
        return response

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        owned = {id(request.connection) for request in self._requests}
        closing: list[httpcore.AsyncConnectionInterface] = []
        kept: list[httpcore.AsyncConnectionInterface] = []
        for connection in self._connections:
            if connection.is_closed():
                continue
            if connection.has_expired() or not (id(connection) in owned or connection.is_idle()):
                closing.append(connection)
            else:
                kept.append(connection)
        surplus = len(kept) - self._max_keepalive_connections
        if surplus > 0:
            idle = [connection for connection in kept if connection.is_idle()][:surplus]
            closing.extend(idle)
            dropped = {id(connection) for connection in idle}
            kept = [connection for connection in kept if id(connection) not in dropped]
        hand_out = _HandOut(self, kept, closing)
        for request in self._requests:
            if request.is_queued():
                found = hand_out.connection_for(request.request.url.origin)
                if found is not None:
                    request.assign_to_connection(found)
        self._connections = hand_out.kept()
        return closing


class _HandOut:
    """One hand-out's connections, asking each at most once per origin whether it is available
    to it and once whether it is idle, however many requests wait: what a connection answers
    does not change within a hand-out (nothing else runs), so a search resumes where the last
    one for that origin stopped.

    An available connection to ``origin`` is handed to every request for it, as httpcore does
    (all but the first find it taken and are queued again)."""

    def __init__(
        self,
        pool: ReclaimingConnectionPool,
        kept: list[httpcore.AsyncConnectionInterface],
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> None:
        self._pool = pool
        self._connections = kept  # new ones appended; those replaced stay, in _replaced
        self._replaced: set[int] = set()
        self._closing = closing
        self._available: dict[tuple[bytes, bytes, int], int] = {}  # each origin's search's place
        self._found: set[tuple[bytes, bytes, int]] = set()  # origins whose search found one
        self._idle = 0  # where the search for an idle connection stands

    def connection_for(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface | None:
        """An available connection to ``origin``; else a new one, made in place of an idle one
        when the pool is full; None when every connection is busy."""
        connections = self._connections
        key = (origin.scheme, origin.host, origin.port)  # as Origin compares; it has no hash
        at = self._available.get(key, 0)
        if at < len(connections) and key in self._found:
            if id(connections[at]) not in self._replaced:
                return connections[at]
            at += 1
        self._found.discard(key)
        while at < len(connections) and not (
            id(connections[at]) not in self._replaced
            and connections[at].can_handle_request(origin)
            and connections[at].is_available()
        ):
            at += 1
        self._available[key] = at
        if at < len(connections):
            self._found.add(key)
            return connections[at]
        if len(connections) - len(self._replaced) >= self._pool._max_connections:
            while self._idle < len(connections) and not (
                id(connections[self._idle]) not in self._replaced
                and connections[self._idle].is_idle()
            ):
                self._idle += 1
            if self._idle == len(connections):
                return None
            idle = connections[self._idle]
            self._replaced.add(id(idle))
            self._closing.append(idle)
        connection = self._pool.create_connection(origin)
        connections.append(connection)
        return connection

    def kept(self) -> list[httpcore.AsyncConnectionInterface]:
        """The pool's connections after the hand-out, in httpcore's order: those kept, then the
        new ones."""
        return [each for each in self._connections if id(each) not in self._replaced]


class _LettingGo:
    """An answer's body as httpcore's pool gives it, whose closing lets go of its request even
    when cancelled. httpcore shields that closing from anyio's cancellation, not from asyncio's
    own (``Task.cancel``, ``asyncio.timeout``): cancelled in the instant its connection was being
    made idle again, the request stayed in the pool and the connection busy, a slot lost for
    good. Let go of, that connection is held by no request and not idle, so the hand-out that
    follows closes it (:meth:`ReclaimingConnectionPool._assign_requests_to_connections`)."""

    def __init__(self, stream: PoolByteStream) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except BaseException:
            # This call was closing it (one made after another started returns at once): no
            # other is under way to let go of the request.
            await self._let_go()
            raise

    async def _let_go(self) -> None:
        pool, request = self._stream._pool, self._stream._pool_request
        with pool._optional_thread_lock:
            if request not in pool._requests:
                return
            pool._requests.remove(request)
            closing = pool._assign_requests_to_connections()
        await pool._close_connections(closing)


def engine_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport with ``limits``, its pool reclaiming orphaned connections.

    httpx builds the pool from its own settings (TLS context, limits, keep-alive); the pool is
    then given this module's class, which adds methods and no state. Should a release of httpx
    or httpcore build it otherwise, or an httpcore release not read (``_READ_RELEASES``) be
    installed, the transport is returned as httpx made it, with a warning (the unit tests say
    when the installed versions are not covered)."""
    transport = httpx.AsyncHTTPTransport(limits=limits)
    pool = getattr(transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool and _reclaimable(pool):
        pool.__class__ = ReclaimingConnectionPool
    else:
        log.warning(
            "this httpx/httpcore release builds its connection pool differently: connections "
            "orphaned by cancelled requests are not reclaimed (encode/httpcore#1093); a "
            "gateway answering gateway_busy while its engines are idle needs a restart",
            extra={"httpx": httpx.__version__, "httpcore": httpcore.__version__},
        )
    return transport


def _reclaimable(pool: httpcore.AsyncConnectionPool) -> bool:
    """Whether ``pool`` is of a release read, keeping its requests and connections where the
    subclass looks."""
    return (
        httpcore.__version__ in _READ_RELEASES
        and isinstance(getattr(pool, "_requests", None), list)
        and isinstance(getattr(pool, "_connections", None), list)
    )
