"""Where admission sends a request now, if anywhere: the first endpoint of the ranking whose
predicted TTFT fits the request's limit — shared pools before burst ones, pools placed for the
prompt's length first — with the top tier sent first where its first token comes near its idle
TTFT, and the tiers below only within the dispatch horizon and below their occupancy limit.

:class:`Dispatch` is a base of :class:`~trunkline.gateway.admission.policy.AdmissionPolicy`,
which sets the state it reads; ``None`` from :meth:`Dispatch._try_dispatch` means hold or refuse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

from trunkline.gateway.admission.decision import Decision
from trunkline.gateway.admission.endpoint_views import idle_view
from trunkline.gateway.admission.pool_shares import DISPATCHED, PoolShares
from trunkline.gateway.routing.views import EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["Dispatch"]


class Dispatch(PoolShares):
    _recent: dict[str, deque[tuple[float, float]]]  # endpoint key -> (at, uncached tokens)

    def _try_dispatch(
        self,
        request: RequestView,
        tier: TierEntry,
        ranked: Sequence[EndpointView],
        now: float,
        deadline: float,
        sent: dict[str, tuple[float, float]],
        *,
        heavy: float | None = None,
        idle_s: float = 0.0,
    ) -> Decision | None:
        """Send to the first endpoint that fits, shared endpoints before burst ones; the top tier
        first within ``top_target_over_idle`` x its idle TTFT, else to the router's choice if
        nearly as soon as the soonest (see :meth:`_soonest_or_first`), else where it starts
        soonest — each only if it meets the deadline."""
        top = tier.priority >= self.config.top_priority
        limit = deadline - now
        fullest = self.config.lower_tier_occupancy
        if tier.priority < self.config.hold_min_priority:
            fullest = self.config.shed_tier_occupancy
        if heavy is not None:
            fullest = min(fullest, heavy)
        # Shared pools before burst ones, pools placed for the prompt's length before the rest.
        placed_for = [view.placed_for(request) for view in ranked]
        order = sorted(range(len(ranked)), key=lambda i: (ranked[i].burst, not placed_for[i]))
        # Another pool's capacity goes to what its own queue holds at this tier or above first
        # (held requests wait in their first choice's queue: a bronze request ranking that pool
        # second took it from a silver one held there).
        queued_first = self._pools_holding(ranked, tier.priority, now)
        order = [i for i in order if ranked[i].pool not in queued_first]
        placed = [i for i in order if placed_for[i] and ranked[i].healthy]
        if not top:  # lower tiers wait for the pools placed for their prompt, never spill
            order = placed or order
        if top:
            target = min(limit, idle_s * self.config.top_target_over_idle)
            for index in placed or order:
                decision = self._fit(request, tier, ranked, index, now, sent, target, None)
                if decision is not None:
                    return decision
            # Nowhere near its idle TTFT: the endpoint where it starts soonest, if in time —
            # unless the router's choice is nearly as soon: moving a request off the replica
            # holding its prefix also costs the requests after it their cache hit.
            order = self._soonest_or_first(request, ranked, now, sent, placed, queued_first)
        for index in order:
            decision = self._fit(
                request, tier, ranked, index, now, sent, limit, None if top else fullest
            )
            if decision is not None:
                return decision
        return None

    def _soonest_or_first(
        self,
        request: RequestView,
        ranked: Sequence[EndpointView],
        now: float,
        sent: Mapping[str, tuple[float, float]],
        placed: Sequence[int],
        closed: set[str],
    ) -> list[int]:
        """Where to try the top tier when no endpoint is near its idle TTFT: the healthy endpoint
        outside ``closed`` pools with the shortest predicted TTFT ([0] if none) — after the
        router's first healthy choice (shared endpoints first) when that is predicted within
        ``top_keep_first_within`` of it.
        The healthy endpoints ``placed`` for the prompt's length count first: the soonest of them,
        then the soonest of all."""
        predicted: dict[int, float] = {}
        for index, view in enumerate(ranked):
            if view.healthy and view.pool not in closed:
                tokens, requests = self._since_measured(view, now, sent)
                predicted[index] = self.predictor.predict(
                    request, view, extra_tokens=tokens, extra_requests=requests
                ).ttft_s
        if not predicted:
            return [0]
        candidates = [i for i in predicted if i in placed] or list(predicted)
        best = min(candidates, key=lambda index: predicted[index])
        first = min(candidates, key=lambda index: (ranked[index].burst, index))
        soonest = min(predicted, key=lambda index: predicted[index])
        order = [best]
        if (
            first != best
            and predicted[first] <= predicted[best] * self.config.top_keep_first_within
        ):
            order = [first, best]
        return order if soonest in order else [*order, soonest]

    def _fit(
        self,
        request: RequestView,
        tier: TierEntry,
        ranked: Sequence[EndpointView],
        index: int,
        now: float,
        sent: dict[str, tuple[float, float]],
        limit: float,
        fullest: float | None,
    ) -> Decision | None:
        """Admit on ``ranked[index]`` if its predicted TTFT is within ``limit`` and (below the
        top tier) it is less full than ``fullest``."""
        view = ranked[index]
        if not view.healthy:
            return None
        tokens, requests = self._since_measured(view, now, sent)
        prediction = self.predictor.predict(
            request, view, extra_tokens=tokens, extra_requests=requests
        )
        if prediction.ttft_s > limit:
            return None
        if fullest is not None:
            if prediction.occupancy >= fullest:
                return None
            if not self._within_horizon(request, view, prediction.ttft_s):
                return None
        if self.config.count_recent_dispatches:
            recent = self._recent.setdefault(view.key, deque())
            recent.append((now, prediction.uncached_tokens))
        pool = ranked[0].pool
        self._rates.observe((pool, tier.name, DISPATCHED), now)
        self._rates.observe((pool, tier.name, request.tenant, DISPATCHED), now)
        done_tokens, done_requests = sent.get(view.key, (0.0, 0.0))
        sent[view.key] = (done_tokens + prediction.uncached_tokens, done_requests + 1)
        return Decision.admit(index, prediction.ttft_s, burst=view.burst)

    def _within_horizon(self, request: RequestView, view: EndpointView, ttft_s: float) -> bool:
        """Whether a lower tier predicted at ``ttft_s`` on ``view`` may be sent there: within the
        dispatch horizon, stretched for a prompt that alone takes long to prefill there."""
        if ttft_s <= self.config.dispatch_horizon_s:
            return True
        idle_s = self.predictor.predict(request, idle_view(view)).ttft_s
        return ttft_s <= idle_s * self.config.long_prompt_slack

    def _since_measured(
        self, view: EndpointView, now: float, sent: Mapping[str, tuple[float, float]]
    ) -> tuple[float, float]:
        """Work sent to ``view`` after its load was measured (in this poll, or since the scrape)."""
        tokens, requests = sent.get(view.key, (0.0, 0.0))
        recent = self._recent.get(view.key)
        if recent and self.config.count_recent_dispatches:
            while recent and recent[0][0] < now - 10.0:
                recent.popleft()
            measured_at = now - view.load.age_s
            for at, uncached in recent:
                if at > measured_at:
                    tokens += uncached
                    requests += 1
        return tokens, requests
