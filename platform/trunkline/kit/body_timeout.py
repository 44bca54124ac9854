"""A request-body timeout for an ASGI app: a request's body must arrive whole within
``timeout_s`` of its headers, or reading it raises the app's own error (each app answers it in
its shape: the gateway's OpenAI error, the control plane's problem detail), counted.

Without it a caller could trickle a body in a byte at a time and hold a connection, a task
and whatever the handler took before reading (the caller's key checked, a token looked up) for
as long as it liked: the server's header timeout ends once the head is whole. The deadline is
the request's arrival (its head complete) plus ``timeout_s``, however many bytes come; once the
body is whole, ``receive`` is passed through untouched (it then only reports a disconnect,
which a handler may wait on for as long as its answer takes).

A client that leaves before its body is whole (``http.disconnect`` while reading it) raises
``ClientClosed``, which each app answers as 499, "the client left", as it does a client gone
before its answer: not the framework's "client disconnected prematurely", a 500 on one app
(logged as a failure with its traceback) and a 400 on the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send
from prometheus_client import CollectorRegistry, Counter

from trunkline.errors import ClientClosed

__all__ = ["BodyTimeout"]


class BodyTimeout:
    def __init__(
        self,
        timeout_s: float | None,
        error: Callable[[float], Exception],
        registry: CollectorRegistry,
    ) -> None:
        """``error(timeout_s)``: what reading a late body raises. None: no timeout (a client
        leaving mid-body is still ``ClientClosed``)."""
        self._timeout_s = timeout_s
        self._error = error
        self.timeouts = Counter(
            "trunkline_body_timeouts",
            "Requests refused (408) because their body did not arrive whole within the body "
            "timeout of their headers (slow or stalled clients)",
            registry=registry,
        )

    def wrap(self, app: ASGIApp) -> ASGIApp:
        timeout_s = self._timeout_s

        async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            loop = asyncio.get_running_loop()
            deadline = None if timeout_s is None else loop.time() + timeout_s
            whole = False

            async def receive_in_time() -> ReceiveMessage:
                nonlocal whole
                if whole:
                    return await receive()
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:  # only with a deadline, so with a timeout_s
                    self.timeouts.inc()
                    raise self._error(timeout_s or 0.0) from None
                if message["type"] == "http.disconnect":
                    raise ClientClosed("the client left before its request's body was whole")
                whole = not message.get("more_body", False)
                return message

            await app(scope, receive_in_time, send)

        return bounded
