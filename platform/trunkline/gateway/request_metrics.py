"""The gateway's request metrics (``trunkline.kit.request_metrics``) and their route labels,
read from the path: the router answers a wrong method on a route (405) without matching it,
and that answer is still labelled with the route."""

from __future__ import annotations

import re

from litestar.types import Scope
from prometheus_client import CollectorRegistry

from trunkline.kit.request_metrics import OTHER, RequestMetrics

__all__ = ["UNCOUNTED", "gateway_request_metrics", "route_of"]

_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"})
UNCOUNTED = frozenset({"/health", "/livez", "/metrics"})
_DEPLOYMENT = re.compile(r"/(openai|v1)/deployments/.+?/(chat/completions|completions|embeddings)")
"""An Azure OpenAI client's path: the deployment (a model, which may hold ``/``) is not a
label."""


def route_of(path: str) -> str | None:
    """The route label of ``path``; None for the paths that are not counted."""
    if path in UNCOUNTED:
        return None
    trimmed = path.rstrip("/") or path
    if trimmed in _ROUTES:
        return trimmed
    if trimmed.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if trimmed == "/openai/models":
        return trimmed
    if trimmed.startswith("/openai/models/"):
        return "/openai/models/{model}"
    if deployment := _DEPLOYMENT.fullmatch(trimmed):
        return f"/{deployment[1]}/deployments/{{deployment}}/{deployment[2]}"
    return OTHER


def _route_label(scope: Scope) -> str:
    return route_of(scope["path"]) or OTHER


def gateway_request_metrics(registry: CollectorRegistry) -> RequestMetrics:
    """``trunkline_requests_total{route,status}``, ``trunkline_request_first_byte_seconds``
    and ``trunkline_request_duration_seconds`` by route."""
    return RequestMetrics(registry, route_of=_route_label, uncounted=UNCOUNTED)
