"""``HEAD`` answered as ``GET`` without its body, as RFC 9110 asks of every server: Litestar
routes a ``GET`` handler for ``GET`` alone, so ``HEAD /health`` was a 405 to an uptime monitor
(several probe with ``HEAD`` by default) and ``curl -I`` alike."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["allowed_with_head", "head_as_get"]


def head_as_get(app: ASGIApp) -> ASGIApp:
    """``app`` answering ``HEAD`` as it answers ``GET``: the same status and headers (its
    ``content-length`` too), no body. A path ``GET`` does not take refuses ``HEAD`` alike."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return

        async def headless(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        await app({**scope, "method": "GET"}, receive, headless)

    return handle


def allowed_with_head(allow: str) -> str:
    """A 405's ``Allow`` (``GET, OPTIONS``) naming ``HEAD`` too where ``GET`` is allowed."""
    methods = [m.strip() for m in allow.split(",") if m.strip()]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)
