"""SLO admission control per tier: one policy object for the gateway and the fleet simulator.

:meth:`AdmissionPolicy.decide` takes a routed request (its tier and the ranked endpoints, each
with its current load) at time ``now`` and answers with a :class:`Decision`:

* **admitted** on the first endpoint of the ranking whose predicted TTFT fits the request's
  dispatch limit — a burst pool endpoint when the ranking has one (only tiers that may use burst
  see them) and the others do not fit;
* **queued** in its pool's :class:`FairQueue` when nothing fits now but a short hold can still
  meet its deadline; :meth:`poll` re-evaluates held requests as loads change and releases them
  (admitted, or rejected ``deadline_exceeded`` the moment their deadline can no longer be met);
* **rejected** at once when holding would only lead to a missed deadline (``slo_unattainable``
  for the top tier, ``overloaded`` for the tiers below it), when the tier is never held (bronze:
  shed first), or when the pool's queue is full (the lowest-priority held request is evicted to
  make room for a higher one).

Engines serve their own queue first come, first served, so priorities only work while engine
queues stay short: every tier below the top is dispatched only when its predicted TTFT is within
``dispatch_horizon_s`` and the endpoint is below its occupancy limit (KV cache, sequence slots),
so a top-tier request arriving next still finds an engine it can start on within its SLO; the
top tier may fill an engine up to its own deadline. The gateway queue, not the engine's, is
where requests wait. The top tier goes where its first token comes within a small factor of its
idle TTFT (shared endpoints first, then burst ones), else where it starts soonest. A tenant
sending far more than its tier-mates is dispatched only up to about twice their mean rate and
into engines at most half full; what it sends beyond waits without anyone waiting behind it.

Pure: time is a parameter, loads come in with the views; the only state is the hold queues,
decayed arrival and dispatch rates per tier and tenant, and (optionally) the work dispatched
since the loads were measured (``EndpointLoad.age_s``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trunkline.gateway.admission.decision import (
    DEADLINE_EXCEEDED,
    OVERLOADED,
    QUEUED,
    SLO_UNATTAINABLE,
    Decision,
)
from trunkline.gateway.admission.endpoint_views import fresh_view, idle_view, pooled_rates
from trunkline.gateway.admission.fair_queue import FairQueue, Held
from trunkline.gateway.admission.predictor import PrefixIndex, TtftPredictor
from trunkline.gateway.admission.rates import DecayingRates
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["AdmissionConfig", "AdmissionPolicy", "Release"]

_DISPATCHED = "dispatched"


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


@dataclass(frozen=True, slots=True)
class Release:
    """A held request that :meth:`AdmissionPolicy.poll` admitted or rejected."""

    held: Held
    decision: Decision


class AdmissionPolicy:
    def __init__(
        self,
        config: AdmissionConfig | None = None,
        *,
        predictor: TtftPredictor | None = None,
        prefix_index: PrefixIndex | None = None,
    ) -> None:
        self.config = config or AdmissionConfig()
        self.predictor = predictor or TtftPredictor(prefix_index=prefix_index)
        self._queues: dict[str, FairQueue] = {}
        self._pool_of: dict[int, str] = {}
        self._evicted: list[Release] = []
        self._recent: dict[str, deque[tuple[float, float]]] = {}
        self._tickets = itertools.count(1)
        self._rates = DecayingRates(self.config.rate_window_s)
        self._priorities: dict[tuple[str, str], int] = {}  # (pool, tier) -> priority
        self._tenants: dict[tuple[str, str], set[str]] = {}  # (pool, tier) -> tenants seen

    # -- new requests ------------------------------------------------------------------------

    def decide(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView], now: float
    ) -> Decision:
        if not ranked:
            return Decision.reject(SLO_UNATTAINABLE, self.config.min_retry_after_s)
        ranked = pooled_rates(ranked)
        pool = ranked[0].pool
        queue = self._queues.setdefault(pool, FairQueue())
        self._observe(pool, request, tier, now)
        idle_s = min(self.predictor.predict(request, idle_view(view)).ttft_s for view in ranked)
        deadline = now + self._budget_s(tier, idle_s)
        # Tenants far over their share wait for room and are passed over when the queue is
        # served: nobody waits behind them, in their tier or below.
        waiting_for_room = {
            (name, tenant)
            for name, priority, tenant in queue.tenants_at_or_above(tier.priority)
            if (name, tenant) != (tier.name, request.tenant)
            and self._heavy(pool, tenant, name, priority, now) is not None
        }
        ahead = queue.ahead_of(tier.priority, tier.name, request.tenant, waiting_for_room)
        if ahead == 0:
            heavy = self._heavy(pool, request.tenant, tier.name, tier.priority, now)
            admitted = self._try_dispatch(
                request, tier, ranked, now, deadline, {}, heavy=heavy, idle_s=idle_s
            )
            if admitted is not None:
                return admitted
        # What it waits for: the pools it may take (not those holding requests of its rank).
        closed = self._pools_holding(ranked, tier.priority, now)
        open_to_it = [view for view in ranked if view.pool not in closed]
        wait_s = self._hold_estimate(tier, open_to_it, ahead, now=now)
        # Hold only with margin: a hold that ends in a rejection wastes the client's time.
        margin_s = wait_s * self.config.hold_margin
        if tier.priority < self.config.hold_min_priority:
            return self._refuse(tier, wait_s)  # shed at once: a short hold is for tiers above
        if not now + margin_s <= min(deadline, now + self.config.max_hold_s):
            return self._refuse(tier, wait_s)
        if len(queue) >= self.config.max_held_per_pool:
            victim = queue.lowest()
            if victim is None or victim.tier.priority >= tier.priority:
                return Decision.reject(OVERLOADED, self._retry_s(wait_s))
            self._drop(victim.ticket)
            self._evicted.append(Release(victim, self._refuse(victim.tier, wait_s, shed=True)))
        ticket = next(self._tickets)
        queue.push(Held(ticket, request, tier, tuple(ranked), now, deadline, idle_s))
        self._pool_of[ticket] = pool
        return Decision(QUEUED, wait_s=wait_s, ticket=ticket)

    # -- held requests -----------------------------------------------------------------------

    def held(self) -> int:
        return len(self._pool_of)

    def poll(self, now: float, loads: Mapping[str, EndpointLoad]) -> list[Release]:
        """Re-evaluate every held request against ``loads`` (by endpoint key) at ``now``."""
        released, self._evicted = self._evicted, []
        for queue in self._queues.values():
            if not len(queue):
                continue
            released += self._expire(queue, now, loads)
            released += self._serve(queue, now, loads)
        return released

    def cancel(self, ticket: int) -> bool:
        """Forget a held request (its client went away)."""
        return self._drop(ticket) is not None

    def _expire(
        self, queue: FairQueue, now: float, loads: Mapping[str, EndpointLoad]
    ) -> list[Release]:
        out = []
        for held in queue.items():
            # Even dispatched now on an idle engine its first token would come too late.
            if now + held.min_ttft_s > held.deadline or now - held.arrival > self.config.max_hold_s:
                self._drop(held.ticket)
                ahead = queue.held_at_or_above(held.tier.priority)
                retry = self._retry_s(
                    self._hold_estimate(held.tier, held.ranked, ahead, loads, now=now)
                )
                out.append(Release(held, Decision.reject(DEADLINE_EXCEEDED, retry)))
        return out

    def _serve(
        self, queue: FairQueue, now: float, loads: Mapping[str, EndpointLoad]
    ) -> list[Release]:
        out: list[Release] = []
        sent: dict[str, tuple[float, float]] = {}
        for held in queue.in_order():
            views = pooled_rates([fresh_view(view, loads) for view in held.ranked])
            heavy = self._heavy(
                views[0].pool, held.request.tenant, held.tier.name, held.tier.priority, now
            )
            decision = self._try_dispatch(
                held.request,
                held.tier,
                views,
                now,
                held.deadline,
                sent,
                heavy=heavy,
                idle_s=held.min_ttft_s,
            )
            if decision is None:
                if heavy is not None:
                    continue  # a heavy tenant waits for room; its peers need not wait for it
                break  # strict priority: nothing below this request goes first
            self._drop(held.ticket)
            waited = dataclasses.replace(decision, wait_s=now - held.arrival)
            out.append(Release(held, waited))
        return out

    def _drop(self, ticket: int) -> Held | None:
        pool = self._pool_of.pop(ticket, None)
        return None if pool is None else self._queues[pool].remove(ticket)

    # -- the rules ---------------------------------------------------------------------------

    def _budget_s(self, tier: TierEntry, idle_s: float) -> float:
        slo_s = tier.ttft_slo_ms / 1000
        return max(slo_s, idle_s * self.config.long_prompt_slack)

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

    def _pools_holding(self, ranked: Sequence[EndpointView], priority: int, now: float) -> set[str]:
        """The pools of ``ranked`` other than its first choice's that hold requests of
        ``priority`` or above, but for tenants far over their share: their pool serves others
        past them, so others need not wait for them there either."""
        own, holding = ranked[0].pool, set()
        for pool in {view.pool for view in ranked} - {own}:
            queue = self._queues.get(pool)
            if queue is not None and any(
                self._heavy(pool, tenant, name, held_priority, now) is None
                for name, held_priority, tenant in queue.tenants_at_or_above(priority)
            ):
                holding.add(pool)
        return holding

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
        self._rates.observe((pool, tier.name, _DISPATCHED), now)
        self._rates.observe((pool, tier.name, request.tenant, _DISPATCHED), now)
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

    def _hold_estimate(
        self,
        tier: TierEntry,
        ranked: Sequence[EndpointView],
        ahead: int,
        loads: Mapping[str, EndpointLoad] | None = None,
        *,
        now: float,
    ) -> float:
        """Expected hold: the requests ahead (and this one) at the share of the pool's completion
        rate that the tiers above leave, capped by the rate this tier was dispatched at lately
        (infinite when the tiers above take it all: shed at once)."""
        predictor = self.predictor
        completions = 0.0
        views = ranked if loads is None else pooled_rates([fresh_view(v, loads) for v in ranked])
        for view in views:
            rates = predictor.rates(view)
            # A full engine finishes its running requests one service time apart on average;
            # one with room would run as many as admission lets it.
            batch = max(view.load.running, rates.max_num_seqs * self.config.lower_tier_occupancy)
            service_s = predictor.typical_output_tokens * rates.decode_step_at(batch)
            completions += batch / service_s
        pool = ranked[0].pool
        above = sum(
            self._rates.rate((pool, name), now)
            for (p, name), priority in self._priorities.items()
            if p == pool and priority > tier.priority
        )
        left = completions - above
        # What the model says is left, but no more than this tier actually got lately.
        left = min(left, self._rates.rate((pool, tier.name, _DISPATCHED), now))
        return (ahead + 1) / left if left > 0 else math.inf

    def _observe(self, pool: str, request: RequestView, tier: TierEntry, now: float) -> None:
        self._priorities[pool, tier.name] = tier.priority
        self._rates.observe((pool, tier.name), now)
        self._rates.observe((pool, tier.name, request.tenant), now)
        self._tenants.setdefault((pool, tier.name), set()).add(request.tenant)

    def _heavy(self, pool: str, tenant: str, tier: str, priority: int, now: float) -> float | None:
        """For a tenant sending far more than the mean of its tier's active tenants, the
        occupancy below which it may still be sent to an engine (None: not heavy)."""
        config = self.config
        if priority >= config.top_priority:
            return None
        window = config.rate_window_s
        mine = self._rates.rate((pool, tier, tenant), now)
        others = [
            rate
            for other in self._tenants[pool, tier]
            if other != tenant
            and (rate := self._rates.rate((pool, tier, other), now)) * window >= 0.5
        ]
        if not others:
            return None
        share = sum(others) / len(others)
        if mine <= config.heavy_tenant_factor * share:
            return None
        dispatched = self._rates.rate((pool, tier, tenant, _DISPATCHED), now)
        if dispatched < config.heavy_tenant_share * share:
            return config.heavy_tenant_occupancy
        return config.heavy_tenant_idle_occupancy

    def _retry_s(self, wait_s: float) -> float:
        return min(max(wait_s, self.config.min_retry_after_s), self.config.max_retry_after_s)

    def _refuse(self, tier: TierEntry, wait_s: float, *, shed: bool = False) -> Decision:
        retry = self._retry_s(wait_s)
        if shed or tier.priority < self.config.top_priority:
            return Decision.reject(OVERLOADED, retry)
        return Decision.reject(SLO_UNATTAINABLE, retry)
