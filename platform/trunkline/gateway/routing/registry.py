"""The routing plugins by name, filled in this one place: filters, scorers (with the schema of
their ``params``) and pickers. A profile names plugins from here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from trunkline.gateway.routing.filters import (
    HealthyFilter,
    ModelFilter,
    PromptLengthFilter,
    ResidencyFilter,
    TierPoolsFilter,
)
from trunkline.gateway.routing.load_scorers import (
    CostScorer,
    KvUsageScorer,
    PrefillQueueScorer,
    QueueDepthScorer,
)
from trunkline.gateway.routing.picker import MaxScorePicker
from trunkline.gateway.routing.plugins import Filter, Picker, Scorer
from trunkline.gateway.routing.prefix_index import ApproxPrefixIndex, KvEventIndex
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer

__all__ = ["FILTERS", "PICKERS", "SCORERS", "ScorerPlugin"]


class NoParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The plugin takes no parameters."""


class PrefixAffinityParams(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    mode: Literal["approximate", "precise"] = "approximate"
    """``approximate``: learn from the router's own decisions; ``precise``: KV-cache events."""
    capacity_tokens: Annotated[int, msgspec.Meta(ge=1)] = 400_000
    """Approximate mode: tokens remembered per endpoint whose KV capacity is unknown (the
    gateway's pools report 0), or per endpoint always with ``size_from: fixed``."""
    size_from: Literal["endpoint", "fixed"] = "endpoint"
    """Approximate mode: ``endpoint`` sizes each endpoint's index from its reported KV capacity
    (``capacity_tokens`` when unknown); ``fixed`` uses ``capacity_tokens`` everywhere."""


@dataclass(frozen=True, slots=True)
class ScorerPlugin:
    params: type[msgspec.Struct]
    build: Callable[[Any], Scorer]


def _prefix_affinity(params: PrefixAffinityParams) -> Scorer:
    if params.mode == "precise":
        return PrefixAffinityScorer(KvEventIndex())
    index = ApproxPrefixIndex(params.capacity_tokens, from_endpoint=params.size_from == "endpoint")
    return PrefixAffinityScorer(index)


FILTERS: Mapping[str, Callable[[], Filter]] = {
    "healthy": HealthyFilter,
    "residency": ResidencyFilter,
    "tier-pools": TierPoolsFilter,
    "model": ModelFilter,
    "prompt-length": PromptLengthFilter,
}

SCORERS: Mapping[str, ScorerPlugin] = {
    "prefix-affinity": ScorerPlugin(PrefixAffinityParams, _prefix_affinity),
    "queue-depth": ScorerPlugin(NoParams, lambda _: QueueDepthScorer()),
    "kv-usage": ScorerPlugin(NoParams, lambda _: KvUsageScorer()),
    "prefill-queue": ScorerPlugin(NoParams, lambda _: PrefillQueueScorer()),
    "cost": ScorerPlugin(NoParams, lambda _: CostScorer()),
}

PICKERS: Mapping[str, Callable[[int], Picker]] = {
    "max-score": MaxScorePicker,
}
