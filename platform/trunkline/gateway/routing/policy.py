"""The routing policy interface, and the registry that builds policies by name.

A policy ranks endpoints for one request: ``rank`` returns indices into ``endpoints``, best
first; the caller tries them in that order (the gateway fails over to the next before the first
byte). ``routed`` tells the policy where the request finally went, for policies that learn from
their own decisions (the approximate prefix-affinity scorer). Besides ``round-robin`` and
``least-loaded``, the registry builds the pipelines of the bundled profiles
(``prefix-aware``, the gateway's default, ``prefix-only``, ``precise-prefix``,
``cost-aware``). The gateway and the fleet simulator both build policies here, so a benchmark
measures the code that serves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from trunkline.errors import ConfigurationError
from trunkline.gateway.routing.views import EndpointView, RequestView

if TYPE_CHECKING:
    from trunkline.gateway.routing.prefix_index import ApproxPrefixIndex, KvEventIndex

__all__ = [
    "POLICIES",
    "RoutingPolicy",
    "UnknownPolicyError",
    "approximate_index",
    "kv_event_index",
    "make_policy",
]


class RoutingPolicy(Protocol):
    name: str

    def rank(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[int]:
        """Indices of ``endpoints``, best first; every index at most once."""
        ...

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        """The request was sent to ``endpoint``."""
        ...


class UnknownPolicyError(ConfigurationError):
    """No routing policy has the requested name."""


def _round_robin() -> RoutingPolicy:
    from trunkline.gateway.routing.round_robin import RoundRobinPolicy

    return RoundRobinPolicy()


def _least_loaded() -> RoutingPolicy:
    from trunkline.gateway.routing.least_loaded import LeastLoadedPolicy

    return LeastLoadedPolicy()


def _profile(name: str) -> Callable[[], RoutingPolicy]:
    def build() -> RoutingPolicy:
        from trunkline.gateway.routing.profiles import bundled_profile

        return bundled_profile(name).build()

    return build


POLICIES: dict[str, Callable[[], RoutingPolicy]] = {
    "round-robin": _round_robin,
    "least-loaded": _least_loaded,
    # Pipelines from the bundled profiles (gateway/routing/profiles/*.yaml).
    "prefix-aware": _profile("prefix-aware"),
    "prefix-only": _profile("prefix-only"),
    "precise-prefix": _profile("precise-prefix"),
    "cost-aware": _profile("cost-aware"),
}


PROFILE_SUFFIXES = (".yaml", ".yml")


def make_policy(name: str, *, seed: int | None = None) -> RoutingPolicy:
    """A fresh policy called ``name`` (each has its own state, such as a round-robin counter),
    or built from the routing profile at that path when it ends in ``.yaml`` / ``.yml``: an
    operator's own profile, deployed as a file. ``seed`` replaces a pipeline's picker seed
    (None: the profile's, so a simulated run is reproducible)."""
    policy = _made(name)
    if seed is not None:
        from trunkline.gateway.routing.pipeline import PipelinePolicy
        from trunkline.gateway.routing.registry import PICKERS

        if isinstance(policy, PipelinePolicy):
            policy.picker = PICKERS[policy.picker.name](seed)
    return policy


def _made(name: str) -> RoutingPolicy:
    if name.endswith(PROFILE_SUFFIXES):
        from pathlib import Path

        from trunkline.gateway.routing.profiles import load_profile

        return load_profile(Path(name)).build()
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise UnknownPolicyError(
            f"unknown routing policy {name!r}; known policies: {known}, or the path of a "
            "routing profile file (.yaml)",
            param="policy",
        ) from None
    return factory()


def approximate_index(policy: RoutingPolicy) -> ApproxPrefixIndex | None:
    """The index ``policy`` learns from its own decisions (``None``: it has none), which the
    gateway tells of engines that restarted (``ApproxPrefixIndex.forget``)."""
    index = getattr(policy, "prefix_index", None)
    from trunkline.gateway.routing.prefix_index import ApproxPrefixIndex

    return index if isinstance(index, ApproxPrefixIndex) else None


def kv_event_index(policy: RoutingPolicy) -> KvEventIndex | None:
    """The index that ``policy`` wants the engines' KV-cache events applied to (``None``: the
    policy does not use them). The gateway's event subscriber and the fleet simulator call its
    ``apply(endpoint_key, stored, removed, cleared)``."""
    index = getattr(policy, "kv_events", None)
    from trunkline.gateway.routing.prefix_index import KvEventIndex

    return index if isinstance(index, KvEventIndex) else None
