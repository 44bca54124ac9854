"""The gateway's connections to the engines: httpx's transport, with connections orphaned by a
cancelled request given back to the pool.

httpcore 1.0.9 (the current release) loses a connection slot for good when a request waiting
for a connection is cancelled in the instant after the pool made a new connection for it and
before it started to use it (encode/httpcore#1093), or in the instant after it opened that
connection and before it sent anything on it (the connection's lock yields a turn): the
connection is neither idle, closed nor expired, so nothing reclaims it, and once
``max_connections`` of them are lost every request waits the pool timeout (the gateway answers
503 ``gateway_busy`` while its engines sit idle).
The gateway cancels such waits all the time: a client leaving, an endpoint ejected while a
request waits on it (``upstream.unless_ejected``), a scrape timing out.
"""

from __future__ import annotations

import logging
from typing import Final

import httpcore
import httpx

log = logging.getLogger(__name__)

_READ_RELEASES: Final = frozenset({"1.0.9"})
"""The httpcore releases whose pool and connection this module was checked against: how they
keep their requests (each ``connection``) and connections, and that a connection no request
holds is idle or closed unless orphaned. Another release may keep them otherwise (an attribute
gone would fail every request), so its pool is left as httpx made it, with the warning, until
it is read and added here."""


class ReclaimingConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, closing the connections that no request holds and that are not idle
    (made or opened for a request cancelled before it used them: nothing else would ever
    release them), and handing out connections in time linear in the pool's size.

    httpcore 1.0.9 counts every connection once per idle one at each hand-out (a request's
    start and end): with the gateway's 1,000 connections, after a burst left a few hundred
    idle, each request held the event loop for milliseconds (200 idle: 2.6 ms a hand-out; 500:
    22 ms; 1,000: 66 ms, measured on this machine's core), stalling every stream it relays.
    The rules are httpcore's: closed connections are forgotten, expired ones closed, idle ones
    closed while the pool holds more than ``max_keepalive_connections`` connections, busy or
    idle (the gateway keeps as many as it may hold, so none are; httpcore also counts the
    closed and expired ones it has not yet removed, so may close more), and each queued
    request, in arrival order, gets an available connection to its origin (the same one to
    several: all but the first find it taken and queue again), else a new one while under
    ``max_connections``, else a new one in place of an idle one, else waits."""

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
            kept = [connection for connection in kept if connection not in idle]
        for request in self._requests:
            if request.is_queued():
                found = self._connection_for(request.request.url.origin, kept, closing)
                if found is not None:
                    request.assign_to_connection(found)
        self._connections = kept
        return closing

    def _connection_for(
        self,
        origin: httpcore.Origin,
        kept: list[httpcore.AsyncConnectionInterface],
        closing: list[httpcore.AsyncConnectionInterface],
    ) -> httpcore.AsyncConnectionInterface | None:
        """An available connection to ``origin``; else a new one, made in place of an idle one
        when the pool is full; None when every connection is busy. (An available connection
        may be handed to two queued requests, as httpcore does: the second finds it taken and
        is queued again.)"""
        for connection in kept:
            if connection.can_handle_request(origin) and connection.is_available():
                return connection
        if len(kept) >= self._max_connections:
            idle = next((connection for connection in kept if connection.is_idle()), None)
            if idle is None:
                return None
            kept.remove(idle)
            closing.append(idle)
        connection = self.create_connection(origin)
        kept.append(connection)
        return connection


def engine_transport(limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport with ``limits``, its pool reclaiming orphaned connections.

    httpx builds the pool from its own settings (TLS context, limits, keep-alive); the pool is
    then given this module's class, which adds a method and no state. Should a release of httpx
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
