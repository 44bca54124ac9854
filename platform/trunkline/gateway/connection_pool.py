"""The gateway's connections to the engines: httpx's transport, with connections orphaned by a
cancelled request given back to the pool.

httpcore 1.0.9 (the current release) loses a connection slot for good when a request waiting
for a connection is cancelled in the instant after the pool made a new connection for it and
before it started to use it (encode/httpcore#1093): the connection is neither idle, closed nor
expired, so nothing reclaims it, and once ``max_connections`` of them are lost every request
waits the pool timeout (the gateway answers 503 ``gateway_busy`` while its engines sit idle).
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
keep their requests (each ``connection``) and connections, and what ``info()`` says. Another
release may keep them otherwise (an attribute gone would fail every request), so its pool is
left as httpx made it, with the warning, until it is read and added here."""

_NEVER_USED = "CONNECTING"
"""``AsyncHTTPConnection.info()`` of a connection that no request has begun to open."""


class ReclaimingConnectionPool(httpcore.AsyncConnectionPool):
    """httpcore's pool, dropping before each assignment the connections that were made for a
    request and are owned by none (never opened: there is nothing to close)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        owned = {id(request.connection) for request in self._requests}
        for connection in list(self._connections):
            if id(connection) not in owned and connection.info() == _NEVER_USED:
                self._connections.remove(connection)
        return super()._assign_requests_to_connections()


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
