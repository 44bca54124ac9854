"""The settings of the admission policy (:class:`AdmissionConfig`): which tiers are top, held or
shed, how full an engine each may be sent to, how long a request may be held, and when a tenant
counts as heavy. See docs/admission.md for how the defaults were chosen."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdmissionConfig"]


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    top_priority: int = 100
    """Tiers at or above this priority (gold by default) may fill an engine up to their deadline
    and are never shed as ``overloaded``."""
    dispatch_horizon_s: float = 0.3
    """Lower tiers are sent to an engine only when their predicted TTFT is this short, or within
    ``long_prompt_slack`` times their TTFT on that endpoint idle if that is longer: a prompt
    whose own prefill takes most of the horizon would otherwise never be sent at all."""
    lower_tier_occupancy: float = 0.9
    """...and the engine is less full than this (KV cache, sequence slots): the rest is headroom
    for the top tier."""
    max_hold_s: float = 4.0
    """No request is held longer than this, whatever its tier's SLO."""
    hold_min_priority: int = 50
    """Tiers below this priority (bronze by default) are never held: admitted or shed at once."""
    shed_tier_occupancy: float = 0.8
    """Those tiers are sent only to engines less full than this, leaving room for the held ones."""
    max_held_per_pool: int = 512
    min_retry_after_s: float = 1.0
    heavy_tenant_factor: float = 4.0
    """A tenant arriving faster than this many times the mean rate of its tier's other active
    tenants is heavy (a burst of 3x its usual rate is not)..."""
    heavy_tenant_occupancy: float = 0.5
    """...and below the top tier is sent straight to an engine only while the engine is less full
    than this; otherwise it waits its round-robin turn in the queue like everyone else..."""
    heavy_tenant_share: float = 2.0
    """...and only while its own dispatch rate is below this many times the mean arrival rate of
    its tier-mates (its fair share, with room for a burst): what it sends beyond that waits and
    is shed, so it cannot fill the engines its tier-mates run on..."""
    heavy_tenant_idle_occupancy: float = 0.1
    """...unless the engine is this empty (nobody is there to slow down)."""
    top_target_over_idle: float = 1.2
    """The top tier goes first where its predicted TTFT is within this many times its TTFT on an
    idle engine — a shared endpoint, else a burst one — and only then to any endpoint where it
    still meets its deadline (a loaded engine's slower steps stretch its first token)."""
    top_keep_first_within: float = 1.25
    """...and when no endpoint is, it stays on the router's first choice (the replica holding its
    prefix, say) while that is predicted within this many times the soonest endpoint's TTFT."""
    rate_window_s: float = 10.0
    """Time constant of the arrival rates per tier and tenant."""
    max_retry_after_s: float = 30.0
    count_recent_dispatches: bool = False
    """Add the work this policy dispatched after each load was measured (``age_s``) to that
    load. Off by default: the gateway's engine state already adds its own in-flight requests."""
    hold_margin: float = 1.5
    """A request is held only if this many times its expected hold still meets its deadline."""
    long_prompt_slack: float = 2.0
    """A prompt whose TTFT on an idle engine alone exceeds the SLO gets this many times that TTFT
    as its deadline instead (it could never be admitted otherwise)."""
