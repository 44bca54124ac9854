"""Filters: the endpoints a request must never use, whatever they score.

- ``healthy``: drops endpoints that are ejected (failed health checks, consecutive errors);
- ``residency``: keeps endpoints inside the tenant's data-residency regions (none: anywhere);
- ``tier-pools``: drops burst pools for tiers that may not use them, and pools placed for other
  tiers (a pool's ``tiers``);
- ``model``: keeps endpoints serving the request's model (unknown on either side: kept);
- ``prompt-length``: prefers endpoints whose pool is placed for the request's prompt length (a
  pool's ``prompt_tokens`` range; pools without one take any length).

Strict filters' verdicts are final: failover walks only the endpoints they all kept. A filter
that is not strict (``prompt-length``) is a preference: the endpoints it would drop are ranked
after all those it keeps, so failover reaches them when the preferred ones fail.
"""

from __future__ import annotations

from trunkline.gateway.routing.candidates import open_to
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = [
    "HealthyFilter",
    "ModelFilter",
    "PromptLengthFilter",
    "ResidencyFilter",
    "TierPoolsFilter",
]


class HealthyFilter:
    name = "healthy"
    strict = True

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return endpoint.healthy


class ResidencyFilter:
    name = "residency"
    strict = True

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return not request.regions or endpoint.region in request.regions


class TierPoolsFilter:
    name = "tier-pools"
    strict = True

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return (request.may_use_burst or not endpoint.burst) and open_to(
            endpoint.tiers, request.tier
        )


class ModelFilter:
    name = "model"
    strict = True

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return request.model is None or endpoint.model is None or endpoint.model == request.model


class PromptLengthFilter:
    name = "prompt-length"
    strict = False

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return endpoint.placed_for(request)
