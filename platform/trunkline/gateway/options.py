"""``OPTIONS`` answers (a browser's CORS preflight, Litestar's own ``Allow`` answer) carrying the
``x-request-id`` every other answer of the gateway's API carries: they are made by Litestar
before any handler of ours runs, and went without one. Their ``Allow`` names ``HEAD`` where
``GET`` is allowed, as a 405's does (``head.py`` answers it)."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from trunkline.gateway.head import allowed_with_head
from trunkline.kit.ids import new_request_id

__all__ = ["options_with_id"]


def options_with_id(app: ASGIApp) -> ASGIApp:
    """``app`` whose ``OPTIONS`` answers carry an ``x-request-id`` of the gateway's (one an
    answer already has, an error's, is kept). Other methods pass by untouched."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                has_id = False
                for name, value in message.get("headers", ()):
                    if name.lower() == b"allow":
                        value = allowed_with_head(value.decode("latin-1")).encode("latin-1")
                    has_id = has_id or name.lower() == b"x-request-id"
                    headers.append((name, value))
                if not has_id:
                    headers.append((b"x-request-id", new_request_id().encode()))
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, with_id)

    return handle
