"""A header-read timeout for uvicorn (slowloris protection), with nginx's split between it and
the keep-alive timeout: on a new connection the request head (request line and headers) must be
whole within ``header_timeout_s`` of the connection opening; on a kept-alive connection the
wait for the next request is uvicorn's keep-alive timeout alone (``timeout_keep_alive``, closed
silently), and the head must be whole within ``header_timeout_s`` of its first byte.

uvicorn bounds only an idle keep-alive connection, and any byte received cancels that: a client
sending nothing on a new connection, or a header byte now and then, held the connection for as
long as it liked. Here the deadline is armed once per request head and bytes arriving do not
move it; it is cancelled when the head is complete, so a slow body (the gateway's
``body_timeout_s`` bounds it) and a long response are not affected. Timing a kept-alive
connection's head from the previous response's end instead closed idle connections at the
header timeout whatever the keep-alive timeout said, sooner than the clients and load balancers
in front expect (their own idle timeout must be the shorter, or a request sent as the server
closes is lost).

On the deadline a connection that had sent part of a head is answered ``408 Request Timeout``
with ``Connection: close`` (RFC 9110 15.5.9), as Apache's mod_reqtimeout does, so a slow but
honest client learns why; one that had sent nothing is closed without an answer, which is what
nginx (``client_header_timeout``) and Go (``ReadHeaderTimeout``) do in both cases: a 408 on a
connection the client has not used yet could cross a request it is just sending, which would
take the 408 for its answer.

It subclasses uvicorn's h11 protocol and is handed to uvicorn as its ``http`` protocol, so the
h11 parser is used even where httptools is installed. The closes are counted per process and
server name (:func:`closed_connections`): the protocol lives in the server, not in the app whose
``/metrics`` reports them.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Iterator
from typing import Any, cast

import h11
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["HeaderTimeoutCollector", "closed_connections", "header_timeout_protocol"]

_LATE = b"The request's headers came too slowly.\n"
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_LATE), _LATE)
)

_closed: collections.Counter[str] = collections.Counter()
"""Connections closed for a late request head, by server name, in this process."""


def closed_connections(server: str) -> int:
    return _closed[server]


def header_timeout_protocol(header_timeout_s: float, server: str) -> type[asyncio.Protocol]:
    """What to pass uvicorn as ``http``: its h11 protocol with a header-read timeout, closes
    counted under ``server``."""
    # uvicorn only calls its protocol "class" (config, server_state, app_state, _loop); a
    # partial, unlike a class made here, pickles into the processes of ``--workers N``.
    protocol = functools.partial(
        HeaderTimeoutProtocol, header_timeout_s=header_timeout_s, server=server
    )
    return cast("type[asyncio.Protocol]", protocol)


class HeaderTimeoutProtocol(H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout_s: float,
        server: str,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout_s = header_timeout_s
        self._server_name = server
        self._head_deadline: asyncio.TimerHandle | None = None
        self._kept_alive = False
        """Whether a request came on this connection: the wait for the next one is then
        uvicorn's keep-alive timeout's, not this one's."""
        self._answered_early = False
        """Whether the deadline runs from an answer sent before its request's body ended."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        # uvicorn cancels its keep-alive timer on a clean close only: a connection reset by its
        # client left it, and the connection with it, scheduled for the keep-alive timeout.
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        # Every head h11 parses goes through here, a pipelined one too (from
        # on_response_complete), and so does each cycle's restart after a request's end.
        super().handle_events()
        self._follow_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_head()

    def _follow_head(self) -> None:
        """No deadline while a request is being worked on; one, armed once, while a head is
        due: on a new connection, on a kept-alive one from the next head's first byte (a
        pipelined one's too, at the previous response's end), and from our response's end
        while they still send its request's body (an early answer: a 401, a 413, the body
        timeout's 408). Once that body ends the connection waits as any kept-alive one."""
        their, ours = self.conn.their_state, self.conn.our_state
        if their is not h11.IDLE and ours is not h11.DONE:
            self._kept_alive = True
            self._cancel_deadline()
            return
        if self._answered_early and their is h11.IDLE:
            self._early_body_ended()
        if self._head_deadline is None and not self.transport.is_closing() and self._head_due():
            self._head_deadline = self.loop.call_later(self._header_timeout_s, self._head_late)
            self._answered_early = their is h11.SEND_BODY

    def _early_body_ended(self) -> None:
        """The body of a request answered early has all come: the answer's deadline stops, and
        uvicorn's keep-alive timer, which the body's bytes cancelled, runs again unless the
        next head has begun (that head then has the header timeout from now)."""
        self._answered_early = False
        self._cancel_deadline()
        received, _closed_by_peer = self.conn.trailing_data
        if not received and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _head_due(self) -> bool:
        if not self._kept_alive or self.conn.their_state is not h11.IDLE:
            return True
        received, _closed_by_peer = self.conn.trailing_data
        return bool(received)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        _closed[self._server_name] += 1
        received, _closed_by_peer = self.conn.trailing_data
        if received.strip():
            self.transport.write(_REQUEST_TIMEOUT)
        self.conn.send(h11.ConnectionClosed())
        if self.transport.get_write_buffer_size():
            # It does not read (a response before, unread, fills its window): close() would
            # wait for the buffer to drain, and keep the connection open.
            self.transport.abort()
        else:
            self.transport.close()


class HeaderTimeoutCollector(Collector):
    """The closes of one server's connections as a Prometheus counter (read at each scrape)."""

    def __init__(self, server: str) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "trunkline_header_timeouts",
            "Connections this process closed because a request's headers did not arrive whole "
            "within the header timeout (slow or stalled clients)",
            value=float(closed_connections(self._server)),
        )
