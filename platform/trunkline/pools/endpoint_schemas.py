"""Where a pool's engines are: the URLs and KV-event addresses the API, the CLI and the
manifests take (each a client can connect to), and the wire schemas of a pool's endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from trunkline.kit.text import URL_PATTERN, ZMQ_ADDRESS_PATTERN

Url = Annotated[str, msgspec.Meta(pattern=URL_PATTERN, max_length=500)]
"""An engine's URL a client can connect to (a URL with port 99999, an IPv6 address left open or
no host was stored, and every request the gateway routed there answered 500)."""

KvEventsAddress = Annotated[
    str,
    msgspec.Meta(
        pattern=ZMQ_ADDRESS_PATTERN,
        max_length=500,
        description="ZMQ address of the engine's KV-cache event publisher (tcp://host:port)",
        examples=["tcp://10.0.0.7:5557"],
    ),
]
KvReplayAddress = Annotated[
    str,
    msgspec.Meta(
        pattern=ZMQ_ADDRESS_PATTERN,
        max_length=500,
        description="ZMQ address where that publisher replays missed events (vLLM's "
        "replay_endpoint); needs kv_events",
        examples=["tcp://10.0.0.7:5558"],
    ),
]


def engine_url(url: str) -> str:
    """``url`` as the gateway joins its paths to it (``/v1/chat/completions``, ``/metrics``):
    without trailing slashes. ``http://host:8000/`` was stored as given, and the gateway then
    asked for ``//metrics`` and ``//v1/...``, which vLLM answers 404: the endpoint was ejected
    and every request routed there answered 502; listed with and without the slash, one engine
    was two endpoints."""
    if "?" in url or "#" in url:  # the URL pattern's business, not a base to join paths to
        return url
    return url.rstrip("/")


class Endpoint(msgspec.Struct):
    id: uuid.UUID
    url: str
    enabled: bool
    kv_events: str | None = None
    kv_replay: str | None = None


class EndpointSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Url
    kv_events: KvEventsAddress | None = None
    kv_replay: KvReplayAddress | None = None
    """Where the engine replays the events a subscriber missed (vLLM's ``replay_endpoint``)."""

    def __post_init__(self) -> None:
        if self.kv_replay is not None and self.kv_events is None:
            raise ValueError("`kv_replay` needs `kv_events`: it replays that publisher's events")
        if self.kv_replay is not None and self.kv_replay == self.kv_events:
            raise ValueError("`kv_replay` must differ from `kv_events`: they are two sockets")


class PoolEndpoints(msgspec.Struct, forbid_unknown_fields=True):
    urls: list[Url | EndpointSpec]
    """The pool's complete endpoint list, each a URL or ``{url, kv_events, kv_replay}``;
    endpoints not listed are removed."""
