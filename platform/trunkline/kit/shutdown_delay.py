"""Readiness that ends before serving does: on SIGTERM a server keeps accepting and answering
for a delay while its readiness probe says it is draining, then stops as it did before.

Kubernetes sends SIGTERM while the load balancers in front (kube-proxy, an ingress controller,
a cloud load balancer) still route to the pod for a moment: a server that closed its listener
at once had those requests refused. Here the server's own SIGTERM handler (uvicorn's) is wrapped
in the process's main thread, from the app's lifespan: the first SIGTERM starts the delay and
reaches the server when it ends; a second one, or SIGINT (Ctrl-C), reaches it at once."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ShutdownDelay", "closing_while_draining", "drain_after_delay_s"]

log = logging.getLogger(__name__)


class ShutdownDelay:
    """``draining`` from the first SIGTERM on; the server hears it ``delay_s`` later."""

    def __init__(self, delay_s: float, *, drain_timeout_s: float | None = None) -> None:
        self.delay_s = delay_s if drain_timeout_s is None else min(delay_s, drain_timeout_s)
        self.draining = False
        self._server_handler: Any = None
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Wrap the server's SIGTERM handler; call on the server's event loop, once the server
        handles signals (an app's lifespan startup). Nothing without a delay, off the main
        thread, or when no Python handler (a server's) is installed."""
        if self.delay_s <= 0 or threading.current_thread() is not threading.main_thread():
            return
        server_handler = signal.getsignal(signal.SIGTERM)
        if not callable(server_handler):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining:  # told twice: stop now
                server_handler(sig, frame)
                return
            self.draining = True
            loop.call_soon_threadsafe(self._start_timer, loop, server_handler, sig)

        self._server_handler = server_handler
        signal.signal(signal.SIGTERM, on_sigterm)

    def _start_timer(self, loop: asyncio.AbstractEventLoop, handler: Any, sig: int) -> None:
        # On the event loop, not in the signal handler, which may have interrupted a log call.
        log.warning(
            "SIGTERM: draining; readiness now fails, serving on for %gs before stopping",
            self.delay_s,
        )
        self._timer = loop.call_later(self.delay_s, handler, sig, None)

    @asynccontextmanager
    async def installed(self, _app: object) -> AsyncIterator[None]:
        """The delay installed for an app's lifespan (a Litestar ``lifespan`` entry)."""
        self.install()
        try:
            yield
        finally:
            self.uninstall()

    def uninstall(self) -> None:
        """Give the server its handler back (the app stops)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._server_handler is not None:
            signal.signal(signal.SIGTERM, self._server_handler)
            self._server_handler = None


def drain_after_delay_s(delay_s: float, drain_timeout_s: int) -> int:
    """The server's graceful shutdown once a delay of ``delay_s`` is over: what is left of
    ``drain_timeout_s``, which bounds the whole stop from SIGTERM on."""
    return max(0, drain_timeout_s - math.ceil(min(delay_s, drain_timeout_s)))


def closing_while_draining(app: ASGIApp, delay: ShutdownDelay) -> ASGIApp:
    """``app`` whose answers, once ``delay`` is draining, carry ``Connection: close``: a client
    (a load balancer's pooled connection) leaves a kept-alive connection for another replica
    while this one still serves, instead of racing the close that ends the delay. Decided as
    each answer starts, so one to a request begun before SIGTERM (a completion in flight)
    says it too."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if (
                message["type"] == "http.response.start"
                and delay.draining
                and not any(name.lower() == b"connection" for name, _ in message["headers"])
            ):
                headers = [*message["headers"], (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, closing)

    return handle
