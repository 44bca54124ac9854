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

The rules live in the policy's bases: :mod:`~trunkline.gateway.admission.dispatch` (where a
request may be sent now) and :mod:`~trunkline.gateway.admission.pool_shares` (rates per tier and
tenant, heavy tenants, the expected hold); the settings in
:mod:`~trunkline.gateway.admission.config`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from trunkline.gateway.admission.config import AdmissionConfig
from trunkline.gateway.admission.decision import (
    DEADLINE_EXCEEDED,
    OVERLOADED,
    QUEUED,
    SLO_UNATTAINABLE,
    Decision,
)
from trunkline.gateway.admission.dispatch import Dispatch
from trunkline.gateway.admission.endpoint_views import current_views, idle_view, pooled_rates
from trunkline.gateway.admission.fair_queue import FairQueue, Held
from trunkline.gateway.admission.predictor import PrefixIndex, TtftPredictor
from trunkline.gateway.admission.rates import DecayingRates
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["AdmissionPolicy", "Release"]


@dataclass(frozen=True, slots=True)
class Release:
    """A held request that :meth:`AdmissionPolicy.poll` admitted or rejected."""

    held: Held
    decision: Decision


class AdmissionPolicy(Dispatch):
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
        self._tenants: dict[tuple[str, str], set[str]] = {}  # (pool, tier) -> active lately
        self._active_at: dict[tuple[str, str], tuple[float, float, int]] = {}

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
        wait_s, retry_s = self._hold_estimate(tier, open_to_it, ahead, now=now)
        # Hold only with margin: a hold that ends in a rejection wastes the client's time. Its
        # first token comes an idle TTFT after the hold at best (when ``poll`` expires it).
        margin_s = wait_s * self.config.hold_margin
        if tier.priority < self.config.hold_min_priority:
            return self._refuse(tier, retry_s)  # shed at once: a short hold is for tiers above
        if not now + margin_s <= min(deadline - idle_s, now + self.config.max_hold_s):
            return self._refuse(tier, retry_s)
        if len(queue) >= self.config.max_held_per_pool and not self._make_room(
            queue, tier, request.tenant, now
        ):
            return self._refuse(tier, retry_s)  # the top tier is never shed as overloaded
        ticket = next(self._tickets)
        queue.push(Held(ticket, request, tier, tuple(ranked), now, deadline, idle_s))
        self._pool_of[ticket] = pool
        return Decision(QUEUED, wait_s=wait_s, ticket=ticket)

    # -- held requests -----------------------------------------------------------------------

    def held(self) -> int:
        return len(self._pool_of)

    def poll(
        self,
        now: float,
        loads: Mapping[str, EndpointLoad],
        out_of_service: Container[str] = (),
        gone: Container[str] = (),
    ) -> list[Release]:
        """Re-evaluate every held request against ``loads`` (by endpoint key) at ``now``; no
        held request is sent to an endpoint in ``out_of_service`` (ejected since it was ranked,
        or ``gone``: it left the configuration) while another of its ranking is in service, nor
        ever to one gone: one whose whole ranking is gone is refused (to retry on the endpoints
        of today's configuration)."""
        released, self._evicted = self._evicted, []
        for queue in self._queues.values():
            if len(queue):
                released += self._expire(queue, now, loads, gone)
        # A ranking may reach other pools than its queue's: a poll serves tier by tier across
        # every queue (gold held for one pool before silver held for another, even behind gold
        # in its own), and each queue sees what the others sent in this poll.
        lines = [
            (deque(queue.in_order()), set[tuple[str, str]]()) for queue in self._queues.values()
        ]
        tiers = sorted({held.tier.priority for line, _ in lines for held in line}, reverse=True)
        sent: dict[str, tuple[float, float]] = {}
        for priority in tiers:
            for line, no_room in lines:
                released += self._serve(
                    line, priority, now, loads, (out_of_service, gone), sent, no_room
                )
        return released

    def cancel(self, ticket: int) -> bool:
        """Forget a held request (its client went away)."""
        return self._drop(ticket) is not None

    def _expire(
        self,
        queue: FairQueue,
        now: float,
        loads: Mapping[str, EndpointLoad],
        gone: Container[str] = (),
    ) -> list[Release]:
        out = []
        for held in queue.items():
            if all(view.key in gone for view in held.ranked):
                self._drop(held.ticket)
                retry = self.config.min_retry_after_s
                out.append(Release(held, Decision.reject(SLO_UNATTAINABLE, retry)))
                continue
            # Even dispatched now on an idle engine its first token would come too late.
            if now + held.min_ttft_s > held.deadline or now - held.arrival > self.config.max_hold_s:
                self._drop(held.ticket)
                ahead = queue.held_at_or_above(held.tier.priority)
                retry = self._retry_s(
                    self._hold_estimate(held.tier, held.ranked, ahead, loads, now=now)[1]
                )
                out.append(Release(held, Decision.reject(DEADLINE_EXCEEDED, retry)))
        return out

    def _serve(
        self,
        line: deque[Held],
        priority: int,
        now: float,
        loads: Mapping[str, EndpointLoad],
        out: tuple[Container[str], Container[str]],
        sent: dict[str, tuple[float, float]],
        no_room: set[tuple[str, str]],
    ) -> list[Release]:
        """Serve the requests of ``priority`` at the front of one queue's ``line`` (its held
        requests in order); ``out``: endpoints out of service, and those of them gone;
        ``no_room``: its heavy tenants (tier, tenant) whose turn failed."""
        released: list[Release] = []
        while line and line[0].tier.priority == priority:
            held = line.popleft()
            tenant = held.tier.name, held.request.tenant
            if tenant in no_room:
                continue  # its requests leave in its own order: the first has no room yet
            views = pooled_rates(current_views(held.ranked, loads, *out))
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
                    no_room.add(tenant)
                    continue  # a heavy tenant waits for room; its peers need not wait for it
                line.clear()  # strict priority: nothing below this request goes first
                break
            self._drop(held.ticket, served=True)
            waited = dataclasses.replace(decision, wait_s=now - held.arrival)
            released.append(Release(held, waited))
        return released

    def _make_room(self, queue: FairQueue, tier: TierEntry, tenant: str, now: float) -> bool:
        """Shed a held request from a full queue for a new one of ``tenant`` in ``tier``, if one
        gives way: the newest of the lowest tier's biggest backlog when that tier is below, or
        a tier-mate holding more than the newcomer would (the queue serves a tier's tenants
        round robin: a flood must not keep its tier-mates out of it)."""
        victim = queue.lowest()
        if victim is None:
            return False
        below = victim.tier.priority < tier.priority
        if not below and not (
            victim.tier.name == tier.name
            and queue.held_by(tier.name, victim.request.tenant)
            > queue.held_by(tier.name, tenant) + 1
        ):
            return False
        self._drop(victim.ticket)
        # Told when its own tier may retry, the newcomer ahead of it (a silver request shed for
        # a gold one was told gold's short wait); a tier-mate's is refused as its tier is
        # refused (the top tier: never as overloaded).
        victim_tier, victim_tenant = victim.tier, victim.request.tenant
        ahead = queue.ahead_of(victim_tier.priority, victim_tier.name, victim_tenant) + 1
        wait_s = self._hold_estimate(victim_tier, victim.ranked, ahead, now=now)[1]
        self._evicted.append(Release(victim, self._refuse(victim_tier, wait_s, shed=below)))
        return True

    def _drop(self, ticket: int, *, served: bool = False) -> Held | None:
        pool = self._pool_of.pop(ticket, None)
        return None if pool is None else self._queues[pool].remove(ticket, served=served)

    # -- the rules ---------------------------------------------------------------------------

    def _budget_s(self, tier: TierEntry, idle_s: float) -> float:
        slo_s = tier.ttft_slo_ms / 1000
        return max(slo_s, idle_s * self.config.long_prompt_slack)

    def _retry_s(self, wait_s: float) -> float:
        return min(max(wait_s, self.config.min_retry_after_s), self.config.max_retry_after_s)

    def _refuse(self, tier: TierEntry, wait_s: float, *, shed: bool = False) -> Decision:
        retry = self._retry_s(wait_s)
        if shed or tier.priority < self.config.top_priority:
            return Decision.reject(OVERLOADED, retry)
        return Decision.reject(SLO_UNATTAINABLE, retry)
