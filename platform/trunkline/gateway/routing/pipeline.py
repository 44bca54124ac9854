"""The routing pipeline: filters → weighted scorers → sticky-until-saturated → picker.

:class:`PipelinePolicy` is a :class:`~trunkline.gateway.routing.policy.RoutingPolicy` built from
a profile (see :mod:`trunkline.gateway.routing.profiles`). For one request it

1. keeps the endpoints every filter keeps (the others are never ranked, so a caller failing
   over down the ranking can never leave the tenant's regions);
2. sums each scorer's values, clamped to [0, 1], times the scorer's weight, divided by the sum
   of the weights (the total is in [0, 1] too);
3. with a :class:`Balance`, ranks the endpoints that are *saturated* after all the others — the
   bounded-load rule of consistent hashing with bounded loads (Mirrokni et al., 2018), as
   SGLang's router does with its balance thresholds: affinity keeps a conversation or a shared
   prefix on its replica only until that replica carries clearly more than its share (its
   share weighted by its nominal throughput when every endpoint reports one, so a mixed fleet
   loads a fast replica more);
4. orders each group with the picker (highest score first, seeded-random among ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trunkline.gateway.routing.capacity import relative_capacity
from trunkline.gateway.routing.plugins import Filter, Picker, Scorer
from trunkline.gateway.routing.prefix_index import KvEventIndex, PrefixIndex
from trunkline.gateway.routing.prefix_scorer import PrefixAffinityScorer
from trunkline.gateway.routing.views import EndpointView, RequestView

__all__ = ["Balance", "PipelinePolicy", "WeightedScorer"]


@dataclass(frozen=True, slots=True)
class Balance:
    """An endpoint is saturated when one more request would take its load (running + waiting)
    above both ``load_factor`` times the mean and the mean + ``headroom`` (the mean counting that
    request): the factor bounds imbalance under load, the headroom keeps affinity at low load,
    where a queue of one or two costs less than a lost prefix."""

    load_factor: float = 1.25
    headroom: float = 4.0

    def saturated(
        self, loads: Sequence[float], weights: Sequence[float] | None = None
    ) -> list[bool]:
        """With ``weights`` (relative capacities, mean 1: see :func:`relative_capacity`) each
        endpoint's share is its weight times the mean, so a replica three times as fast takes
        three times the requests before it counts as saturated."""
        if not loads:
            return []
        shares = list(weights) if weights is not None else [1.0] * len(loads)
        mean = (sum(loads) + 1.0) / sum(shares)
        return [
            load + 1.0 > max(self.load_factor * mean * share, mean * share + self.headroom)
            for load, share in zip(loads, shares, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


class PipelinePolicy:
    """Filters, weighted scorers, an optional balance rule and a picker, under one name."""

    def __init__(
        self,
        name: str,
        *,
        filters: Sequence[Filter],
        scorers: Sequence[WeightedScorer],
        picker: Picker,
        balance: Balance | None = None,
    ) -> None:
        self.name = name
        self.filters = tuple(filters)
        self.preferences = tuple(f for f in self.filters if not f.strict)
        self.scorers = tuple(s for s in scorers if s.weight > 0)
        self.picker = picker
        self.balance = balance
        self._total_weight = sum(s.weight for s in self.scorers)

    @property
    def prefix_index(self) -> PrefixIndex | None:
        """The index of the first prefix-affinity scorer (where prompts' blocks are)."""
        for weighted in self.scorers:
            if isinstance(weighted.scorer, PrefixAffinityScorer):
                return weighted.scorer.index
        return None

    @property
    def kv_events(self) -> KvEventIndex | None:
        """The index the engines' KV-cache events feed, when the prefix scorer uses one."""
        index = self.prefix_index
        return index if isinstance(index, KvEventIndex) else None

    def rank(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[int]:
        kept = [
            index
            for index, endpoint in enumerate(endpoints)
            if all(f.keep(request, endpoint) for f in self.filters if f.strict)
        ]
        if len(kept) <= 1:
            return kept
        ranking: list[int] = []
        for group in self._preferred_first(request, endpoints, kept):
            ranking += self._ordered(request, endpoints, group)
        return ranking

    def _ordered(
        self, request: RequestView, endpoints: Sequence[EndpointView], group: list[int]
    ) -> list[int]:
        """``group`` best first: scored, and balanced, among themselves."""
        if len(group) <= 1:
            return group
        views = [endpoints[index] for index in group]
        scores = self.scores(request, views)
        by_index = [0.0] * len(endpoints)
        for index, value in zip(group, scores, strict=True):
            by_index[index] = value
        if self.balance is None:
            return self.picker.order(by_index, group)
        loads = [v.load.running + v.load.waiting for v in views]
        saturated = self.balance.saturated(loads, relative_capacity(views))
        free = [index for index, full in zip(group, saturated, strict=True) if not full]
        full = [index for index, full in zip(group, saturated, strict=True) if full]
        return self.picker.order(by_index, free) + self.picker.order(by_index, full)

    def _preferred_first(
        self, request: RequestView, endpoints: Sequence[EndpointView], kept: list[int]
    ) -> list[list[int]]:
        """``kept`` in groups ranked one after the other, each as if it were all the candidates:
        the endpoints every preference keeps first, then those only the first preferences keep,
        and so on (empty groups dropped)."""
        groups = [kept]
        for preference in self.preferences:
            split: list[list[int]] = []
            for group in groups:
                yes: list[int] = []
                no: list[int] = []
                for index in group:
                    (yes if preference.keep(request, endpoints[index]) else no).append(index)
                split += [part for part in (yes, no) if part]
            groups = split
        return groups

    def scores(self, request: RequestView, endpoints: Sequence[EndpointView]) -> list[float]:
        """The weighted score of each endpoint in [0, 1] (filters aside)."""
        totals = [0.0] * len(endpoints)
        if not self._total_weight:
            return totals
        for weighted in self.scorers:
            values = weighted.scorer.score(request, endpoints)
            weight = weighted.weight / self._total_weight
            for position, value in enumerate(values):
                totals[position] += weight * min(1.0, max(0.0, value))
        return totals

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        for weighted in self.scorers:
            weighted.scorer.routed(request, endpoint)
