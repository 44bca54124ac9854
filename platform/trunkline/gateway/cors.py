"""Which web pages may call the gateway from a browser (CORS): none unless configured."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORS_EXPOSED", "cors_config", "cors_outside"]

CORS_EXPOSED = (
    "x-request-id", "openai-processing-ms", "retry-after", "retry-after-ms", "x-should-retry",
    "x-trunkline-pool",
)  # fmt: skip
"""Answer headers a browser page may read (the rest it is not shown): what the OpenAI SDKs
read to retry and to report a request's id."""


def cors_config(origins: Sequence[str]) -> CORSConfig | None:
    """Browser pages of ``origins`` may call the gateway (``GatewaySettings.cors_origins``):
    any request header (the SDKs send their own), never credentials (a key is a header)."""
    if not origins:
        return None
    return CORSConfig(
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "HEAD"],
        allow_headers=["*"],
        allow_credentials=False,
        expose_headers=list(CORS_EXPOSED),
        max_age=600,
    )


def cors_outside(app: ASGIApp, config: CORSConfig | None) -> ASGIApp:
    """``app`` whose answers made outside Litestar's CORS middleware (by the ASGI wrappers
    around it: the 503 of a request cut at shutdown) carry the CORS headers its own answers
    carry; a browser hides an answer without them from the page. Preflights, and answers that
    already have them, pass by untouched."""
    if config is None:
        return app

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        origin = None
        if scope["type"] == ScopeType.HTTP and scope["method"] != "OPTIONS":
            origin = Headers.from_scope(scope).get("origin")
        if origin is None:
            await app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                if "access-control-allow-methods" not in headers:  # Litestar's always has one
                    headers.update(_answer_headers(config, origin))
            await send(message)

        await app(scope, receive, with_cors)

    return handle


def _answer_headers(config: CORSConfig, origin: str) -> dict[str, str]:
    """What Litestar's CORS middleware adds to an answer to a page of ``origin``."""
    headers = dict(config.simple_headers)
    if not config.is_allow_all_origins and config.is_origin_allowed(origin):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    headers["Access-Control-Allow-Headers"] = ", ".join(sorted(set(config.allow_headers)))
    headers["Access-Control-Allow-Methods"] = ", ".join(sorted(set(config.allow_methods)))
    return headers
