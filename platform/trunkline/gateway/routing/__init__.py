"""Choosing where a request runs: pure policies over views of the request and the endpoints.

The gateway and the fleet simulator call the same objects: :func:`eligible` filters the
snapshot's endpoints (model, residency, tier), :class:`Router` builds one
:class:`EndpointView` per candidate and orders them with a :class:`RoutingPolicy` made by
:func:`make_policy`: ``round-robin``, ``least-loaded``, or a :class:`PipelinePolicy` (filters →
weighted scorers → sticky-until-saturated → picker) built from a YAML profile — ``prefix-aware``
(the gateway's default), ``prefix-only``, ``precise-prefix``, ``cost-aware`` (see
docs/routing.md). :class:`TextPrompt` is the prompt view of a gateway without a tokenizer;
:func:`kv_event_index` gives the index a KV-cache event subscriber feeds.
"""

from trunkline.gateway.routing.candidates import Candidate, eligible
from trunkline.gateway.routing.least_loaded import LeastLoadedPolicy
from trunkline.gateway.routing.pipeline import Balance, PipelinePolicy, WeightedScorer
from trunkline.gateway.routing.plugins import Filter, Picker, Scorer
from trunkline.gateway.routing.policy import (
    POLICIES,
    RoutingPolicy,
    UnknownPolicyError,
    approximate_index,
    kv_event_index,
    make_policy,
)
from trunkline.gateway.routing.prefix_index import (
    ApproxPrefixIndex,
    KvEventIndex,
    PrefixIndex,
    apply_kv_events,
)
from trunkline.gateway.routing.profiles import RoutingProfile, load_profile, parse_profile
from trunkline.gateway.routing.registry import FILTERS, PICKERS, SCORERS
from trunkline.gateway.routing.round_robin import RoundRobinPolicy
from trunkline.gateway.routing.router import Router, endpoint_view
from trunkline.gateway.routing.text_prompt import TextPrompt
from trunkline.gateway.routing.views import (
    EndpointLoad,
    EndpointView,
    PromptRange,
    PromptView,
    RequestView,
)

__all__ = [
    "FILTERS",
    "PICKERS",
    "POLICIES",
    "SCORERS",
    "ApproxPrefixIndex",
    "Balance",
    "Candidate",
    "EndpointLoad",
    "EndpointView",
    "Filter",
    "KvEventIndex",
    "LeastLoadedPolicy",
    "Picker",
    "PipelinePolicy",
    "PrefixIndex",
    "PromptRange",
    "PromptView",
    "RequestView",
    "RoundRobinPolicy",
    "Router",
    "RoutingPolicy",
    "RoutingProfile",
    "Scorer",
    "TextPrompt",
    "UnknownPolicyError",
    "WeightedScorer",
    "apply_kv_events",
    "approximate_index",
    "eligible",
    "endpoint_view",
    "kv_event_index",
    "load_profile",
    "make_policy",
    "parse_profile",
]
