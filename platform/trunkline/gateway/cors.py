"""Which web pages may call the gateway from a browser (CORS): none unless configured."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.config.cors import CORSConfig

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
