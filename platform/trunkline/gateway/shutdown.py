"""Requests cut when the gateway stops: once its drain time (``drain_timeout_s``) is out, uvicorn
cancels the requests left, and a cancellation leaving the app made it log "Exception in ASGI
application" with a traceback per request, and cut a stream off without an end. Here each ends
as the gateway's other failures do, with one log line; metering them is the lifespan's
(``GatewayService.meter_the_unfinished``), as before.

Nothing else cancels a request's whole task (a client leaving is heard through ``receive``), so
a cancellation reaching this wrapper is the server stopping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from trunkline.auth.secrets import redacted
from trunkline.errors import Unavailable
from trunkline.gateway.engine_answers import error_event
from trunkline.gateway.errors import encode_error
from trunkline.kit.ids import new_request_id

__all__ = ["cut_at_shutdown"]

log = logging.getLogger(__name__)

_MESSAGE = "The gateway stopped before this request ended; retry it."
_CODE = "gateway_stopped"
_WHY = "its drain time ran out, or a second Ctrl-C cut it short"


def cut_at_shutdown(app: ASGIApp) -> ASGIApp:
    """``app`` whose requests, cancelled as the server stops, end in an answer of the gateway's
    instead of a traceback: a stream with an error event and ``[DONE]``, a request not answered
    yet with a 503. Per request it costs one closure; the answers pass by untouched."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        head: dict[bytes, bytes] | None = None
        ended = False

        def watched(message: Message) -> Awaitable[None]:
            # Not a coroutine of its own: a stream sends one message per event.
            nonlocal head, ended
            if message["type"] == "http.response.start":
                head = dict(message["headers"])
            elif not message.get("more_body", False):
                ended = True
            return send(message)

        try:
            await app(scope, receive, watched)
        except asyncio.CancelledError:
            if ended:
                return
            await _end(scope, head, send)

    return handle


async def _end(scope: Scope, head: dict[bytes, bytes] | None, send: Send) -> None:
    headers = head or {}
    request_id = headers.get(b"x-request-id", b"").decode("latin-1") or (
        (scope.get("state") or {}).get("request_id")  # ``handlers.request_id_of``, if it ran
        or new_request_id()  # cut before: the 503 carries one all the same, as every answer
    )
    try:
        what = await _answer(head, headers, request_id, send)
    except (asyncio.CancelledError, OSError, RuntimeError):
        # The event loop closing cancels it again, a client too slow to take the end holds
        # it: the line still says it was cut.
        what = f"request cut: the gateway stopped ({_WHY})"
    # a key pasted into the path (as an Azure deployment name) keeps its secret out of the log
    log.warning(what, extra={"request_id": request_id, "path": redacted(scope["path"])})


async def _answer(
    head: dict[bytes, bytes] | None, headers: dict[bytes, bytes], request_id: str, send: Send
) -> str:
    """End the answer as far as it can be ended; says what was cut."""
    if head is None:
        what = f"request cut before its answer: the gateway stopped ({_WHY})"
        status, body = encode_error(Unavailable(_MESSAGE, reason=_CODE))
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
                (b"x-request-id", request_id.encode("latin-1")),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
    elif headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        what = f"stream cut: the gateway stopped before it ended ({_WHY})"
        event = error_event(_MESSAGE, _CODE)
        await send({"type": "http.response.body", "body": event, "more_body": False})
    else:  # a plain answer half sent (the gateway sends them whole): nothing to end it with
        what = f"answer cut: the gateway stopped while it was sent ({_WHY})"
    return what
