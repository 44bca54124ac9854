"""Choosing where a request runs: pure policies over views of the request and the endpoints.

The gateway and the fleet simulator call the same objects: :func:`eligible` filters the
snapshot's endpoints (model, residency, tier), :class:`Router` builds one
:class:`EndpointView` per candidate and orders them with a :class:`RoutingPolicy` made by
:func:`make_policy` (``round-robin``, ``least-loaded``; issue 4 adds the filter → scorer →
picker pipeline as further policies).
"""

from trunkline.gateway.routing.candidates import Candidate, eligible
from trunkline.gateway.routing.least_loaded import LeastLoadedPolicy
from trunkline.gateway.routing.policy import (
    POLICIES,
    RoutingPolicy,
    UnknownPolicyError,
    make_policy,
)
from trunkline.gateway.routing.round_robin import RoundRobinPolicy
from trunkline.gateway.routing.router import Router, endpoint_view
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, PromptView, RequestView

__all__ = [
    "POLICIES",
    "Candidate",
    "EndpointLoad",
    "EndpointView",
    "LeastLoadedPolicy",
    "PromptView",
    "RequestView",
    "RoundRobinPolicy",
    "Router",
    "RoutingPolicy",
    "UnknownPolicyError",
    "eligible",
    "endpoint_view",
    "make_policy",
]
