"""Prometheus metrics of the requests the gateway answers: how many by route and status, how
long until the first byte of the answer (a stream's first event) and until its last.

Labels stay bounded: the route's template (``/v1/models/{model}``, never the model asked
for), the HTTP status; no tenant, key or model. Per tenant and key, the usage ledger counts.
``/health``, ``/livez`` and ``/metrics`` themselves are not counted.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["RequestMetrics", "route_of"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"})
_UNCOUNTED = frozenset({"/health", "/livez", "/metrics"})
OTHER = "other"
"""The route label of a path the gateway does not serve."""


def route_of(path: str) -> str | None:
    """The route label of ``path``; None for the paths that are not counted."""
    if path in _UNCOUNTED:
        return None
    trimmed = path.rstrip("/") or path
    if trimmed in _ROUTES:
        return trimmed
    if trimmed.startswith("/v1/models/"):
        return "/v1/models/{model}"
    return OTHER


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "trunkline_requests",
            "Requests answered, by route and HTTP status (a stream counts its status when it "
            "starts; 499: the client left before its answer)",
            ["route", "status"],
            registry=registry,
        )
        self.first_byte = Histogram(
            "trunkline_request_first_byte_seconds",
            "Seconds from a request's arrival to its answer's first byte: a stream's first "
            "event (its time to first token), a whole answer's start",
            ["route"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.duration = Histogram(
            "trunkline_request_duration_seconds",
            "Seconds from a request's arrival to its answer's last byte",
            ["route"],
            buckets=_SECONDS,
            registry=registry,
        )

        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        """(requests, first byte, duration) children by (route, status): ``labels()`` costs
        more than the observation, on every request."""

    def _of(self, route: str, status: int) -> tuple[Any, Any, Any]:
        key = (route, str(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(*key),
                self.first_byte.labels(route),
                self.duration.labels(route),
            )
        return children

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """``app`` with every HTTP request it answers counted (a Litestar middleware)."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            route = route_of(scope["path"]) if scope["type"] == ScopeType.HTTP else None
            if route is None:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 0

            async def watched(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    self._of(route, status)[1].observe(time.perf_counter() - started)
                await send(message)

            try:
                await app(scope, receive, watched)
            finally:
                # No answer started: the client left before it (the handler was cancelled).
                requests, _first, duration = self._of(route, status or 499)
                requests.inc()
                duration.observe(time.perf_counter() - started)

        return counted

    def count_unrouted(self, path: str, status: int) -> None:
        """A request the router answered itself (an unknown path, a wrong method): route
        middleware never sees it."""
        route = route_of(path)
        if route is not None:
            self._of(route, status)[0].inc()
