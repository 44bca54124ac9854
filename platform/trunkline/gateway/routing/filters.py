"""Filters: the endpoints a request must never use, whatever they score.

- ``healthy``: drops endpoints that are ejected (failed health checks, consecutive errors);
- ``residency``: keeps endpoints inside the tenant's data-residency regions (none: anywhere);
- ``tier-pools``: drops burst pools for tiers that may not use them;
- ``model``: keeps endpoints serving the request's model (unknown on either side: kept);
- ``prompt-length``: keeps endpoints whose pool is placed for the request's prompt length (a
  pool's ``prompt_tokens`` range; pools without one take any length). A preference, not a rule
  (``strict = False``): when it would keep none of the endpoints the strict filters left —
  every pool for long prompts ejected, say — the request goes to any of them.

Strict filters' verdicts are final: failover walks only the endpoints they all kept.
"""

from __future__ import annotations

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
        return request.may_use_burst or not endpoint.burst


class ModelFilter:
    name = "model"
    strict = True

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        return request.model is None or endpoint.model is None or endpoint.model == request.model


class PromptLengthFilter:
    name = "prompt-length"
    strict = False

    def keep(self, request: RequestView, endpoint: EndpointView) -> bool:
        placed = endpoint.prompt_tokens
        return placed is None or request.num_prompt_tokens in placed
