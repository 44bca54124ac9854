"""Prometheus metrics of the HTTP requests an app answers: how many by route and status, how
long until the answer's first byte (a stream's first event) and until its last.

One ASGI wrapper around the whole app, router included, so the router's own answers (an
unknown path, a wrong method) are counted with the rest. Labels stay bounded: the route's
template (``/v1/models/{model}``, ``/api/v1/tenants/{tenant_id}/keys``, never an id or a model
asked for), the method among the standard ones, the HTTP status; no tenant, key, user or model.
Per tenant and key, the usage ledger counts. Probes and ``/metrics`` itself are not counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.exceptions import MethodNotAllowedException, NotFoundException
from litestar.types import ASGIApp, HTTPScope, Message, Method, Receive, Scope, Send
from litestar.utils import normalize_path
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = [
    "LATENCY_BUCKETS",
    "OTHER",
    "RequestMetrics",
    "method_of",
    "route_template",
    "route_templates",
]

LATENCY_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5),
    *(5.0, 10.0, 30.0, 60.0, 300.0),
)
"""Dense from 0.2 s to 2.5 s, where tiers' time-to-first-token SLOs lie (the bundled ones' 0.5,
2 and 10 s among the bounds): the share of requests within an SLO is read from its bucket."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ROUTED: tuple[Method, ...] = ("GET", "POST", "PUT", "PATCH", "DELETE")
"""The methods a route may take, tried to find the route at a path refused for its method."""
OTHER = "other"
"""The route label of a path the app does not serve; the method label of a made-up method."""

RouteOf = Callable[[Scope], str]
"""A request's route label, read once the router has seen it (as the answer starts)."""


def route_template(scope: Scope) -> str:
    """The template of the route Litestar's router matched, ``other`` when none did."""
    template: str | None = scope.get("path_template")
    return template or OTHER


def route_templates(app: Litestar) -> RouteOf:
    """``route_template``, and for a path the router refused for its method (405, answered
    before any route matched) the template of the route at that path: a route's wrong method
    is counted with the route, ``other`` stays the paths no route serves. Looked up only for
    requests the router matched to no route (an unknown path fails the first lookup)."""

    def route_of(scope: Scope) -> str:
        template: str | None = scope.get("path_template")
        if template:
            return template
        path = normalize_path(scope["path"])
        for method in _ROUTED:
            try:
                return app.asgi_router.handle_routing(path=path, method=method)[4] or OTHER
            except MethodNotAllowedException:
                continue
            except NotFoundException:
                break
        return OTHER

    return route_of


def method_of(scope: Scope) -> str:
    """The method, or ``other``: any token is a method to the HTTP parser, and a label per
    made-up method would let a caller grow the metrics without bound."""
    method: str = cast("HTTPScope", scope)["method"]
    return method if method in _METHODS else OTHER


class RequestMetrics:
    """``prefix``: the metrics' name prefix (``trunkline`` for the gateway's,
    ``trunkline_controlplane`` for the control plane's, which a dashboard of inference traffic
    must not add up with the gateway's). ``by_method``: a method label on every metric.
    ``first_byte``: also time the answer's first byte (a stream's time to first token)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        route_of: RouteOf,
        uncounted: frozenset[str],
        prefix: str = "trunkline",
        by_method: bool = False,
        first_byte: bool = True,
    ) -> None:
        self._route_of = route_of
        self._uncounted = uncounted
        self._by_method = by_method
        timed = ["route", "method"] if by_method else ["route"]
        self.requests = Counter(
            f"{prefix}_requests",
            f"Requests answered, by route{', method' if by_method else ''} and HTTP status (a "
            "stream counts its status when it starts; 499: the client left before its answer)",
            [*timed, "status"],
            registry=registry,
        )
        self.first_byte: Histogram | None = None
        if first_byte:
            self.first_byte = Histogram(
                f"{prefix}_request_first_byte_seconds",
                "Seconds from a request's arrival to its answer's first byte: a stream's first "
                "event (its time to first token), a whole answer's start",
                timed,
                buckets=LATENCY_BUCKETS,
                registry=registry,
            )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Seconds from a request's arrival to its answer's last byte",
            timed,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        """(requests, first byte, duration) children by (route, method, status): ``labels()``
        costs more than the observation, on every request."""

    def _of(self, route: str, method: str, status: int) -> tuple[Any, Any, Any]:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            timed = (route, method) if self._by_method else (route,)
            first = None if self.first_byte is None else self.first_byte.labels(*timed)
            children = self._children[key] = (
                self.requests.labels(*timed, str(status)),
                first,
                self.duration.labels(*timed),
            )
        return children

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with every HTTP request it answers counted: wrap the app's whole handler
        (``Litestar.asgi_handler``), outside its router."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            # The router serves ``/metrics/`` (or ``//metrics``) as ``/metrics``: not counted.
            if scope["type"] != ScopeType.HTTP or normalize_path(scope["path"]) in self._uncounted:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            method = method_of(scope) if self._by_method else ""
            status, route = 0, ""

            async def watched(message: Message) -> None:
                nonlocal status, route
                if message["type"] == "http.response.start":
                    status, route = message["status"], self._route_of(scope)
                    first = self._of(route, method, status)[1]
                    if first is not None:
                        first.observe(time.perf_counter() - started)
                await send(message)

            try:
                await app(scope, receive, watched)
            finally:
                # No answer started: the client left before it (the handler was cancelled).
                route = route or self._route_of(scope)
                requests, _first, duration = self._of(route, method, status or 499)
                requests.inc()
                duration.observe(time.perf_counter() - started)

        return counted
