"""The control plane's request context: a request id bound to every log line of a request and
echoed as ``x-request-id``, and one access-log line per request."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from trunkline.auth.secrets import redacted
from trunkline.kit.ids import new_request_id
from trunkline.kit.logging import bind, reset

log = logging.getLogger("trunkline.controlplane")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PROBES = frozenset({"/healthz", "/livez"})
"""Paths an orchestrator polls: logged at DEBUG, not on every probe at INFO."""
CUT = "cut: the server stopped before the response was whole (drain timeout)"


class RequestContextMiddleware:
    """Bind a request id to every log line of the request and echo it as ``x-request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        presented = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = presented if _REQUEST_ID.match(presented) else new_request_id()
        token = bind(request_id=request_id)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        cut = False
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:  # uvicorn's drain timeout ran out (a client's leaving
            cut = True  # cancels nothing here): the response, if begun, never ends
            raise
        finally:
            elapsed_ms = round(1000 * (time.perf_counter() - started), 2)
            extra = {"status": status, "duration_ms": elapsed_ms, "cut": cut}
            path = loggable(redacted(scope["path"]))
            if cut:
                log.warning(f"%s %s %s {CUT}", method, path, status, extra=extra)
            else:
                level = logging.DEBUG if scope["path"] in _PROBES else logging.INFO
                log.log(level, "%s %s %s", method, path, status, extra=extra)
            reset(token)


def loggable(text: str) -> str:
    """``text`` (a decoded path: ``%0A`` is a line break by now) with its control characters
    escaped, so a caller cannot start a forged log line or send escape sequences to a terminal."""
    return _CONTROL_CHARACTER.sub(lambda found: f"\\x{ord(found.group()):02x}", text)
