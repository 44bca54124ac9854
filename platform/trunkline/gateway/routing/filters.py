"""Filters: the endpoints a request must never use, whatever they score.

- ``healthy``: drops endpoints that are ejected (failed health checks, consecutive errors);
- ``residency``: keeps endpoints inside the tenant's data-residency regions (none: anywhere);
- ``tier-pools``: drops burst pools for tiers that may not use them;
- ``model``: keeps endpoints serving the request's model (unknown on either side: kept).
"""

from __future__ import annotations

from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["HealthyFilter", "ModelFilter", "ResidencyFilter", "TierPoolsFilter"]


class HealthyFilter:
    name = "healthy"

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return endpoint.healthy


class ResidencyFilter:
    name = "residency"

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return not request.regions or endpoint.region in request.regions


class TierPoolsFilter:
    name = "tier-pools"

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return request.may_use_burst or not endpoint.burst


class ModelFilter:
    name = "model"

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return request.model is None or endpoint.model is None or endpoint.model == request.model
