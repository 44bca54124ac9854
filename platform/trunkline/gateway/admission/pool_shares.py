"""What each tier and tenant gets of a pool, as admission sees it: arrival and dispatch rates per
tier and tenant, which tenant sends far more than its tier-mates (heavy), the completions the
tiers above a request leave it (its expected hold), and which other pools hold requests it must
not pass.

:class:`PoolShares` is a base of :class:`~trunkline.gateway.admission.policy.AdmissionPolicy`,
which sets the state it reads (the policy's hold queues and decayed rates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from trunkline.gateway.admission.config import AdmissionConfig
from trunkline.gateway.admission.endpoint_views import fresh_view, pooled_rates
from trunkline.gateway.admission.fair_queue import FairQueue
from trunkline.gateway.admission.predictor import TtftPredictor
from trunkline.gateway.admission.rates import DecayingRates
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["DISPATCHED", "PoolShares"]

DISPATCHED = "dispatched"
"""The last part of a rate key counting dispatches rather than arrivals."""


class PoolShares:
    config: AdmissionConfig
    predictor: TtftPredictor
    _queues: dict[str, FairQueue]
    _rates: DecayingRates
    _priorities: dict[tuple[str, str], int]  # (pool, tier) -> priority
    _tenants: dict[tuple[str, str], set[str]]  # (pool, tier) -> tenants active lately
    _active_at: dict[tuple[str, str], tuple[float, float, int]]  # -> (now, rates, tenants)

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

    def _hold_estimate(
        self,
        tier: TierEntry,
        ranked: Sequence[EndpointView],
        ahead: int,
        loads: Mapping[str, EndpointLoad] | None = None,
        *,
        now: float,
    ) -> tuple[float, float]:
        """Expected hold: the requests ahead (and this one) at the share of the pool's completion
        rate that the tiers above leave, capped by the rate this tier was dispatched at lately
        (infinite when the tiers above take it all: shed at once); and when to retry, the same
        but without that cap when the tier has no dispatches here to cap by (a gateway just
        started, a pool new to it), yet the pool completes requests."""
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
        modelled = completions - above
        # What the model says is left, but no more than this tier actually got lately (0 only
        # if it never got anything here: a decayed rate stays above 0 for hours).
        left = min(modelled, self._rates.rate((pool, tier.name, DISPATCHED), now))
        if left > 0:
            wait_s = (ahead + 1) / left
            return wait_s, wait_s
        return math.inf, (ahead + 1) / modelled if modelled > 0 else math.inf

    def _observe(self, pool: str, request: RequestView, tier: TierEntry, now: float) -> None:
        self._priorities[pool, tier.name] = tier.priority
        self._rates.observe((pool, tier.name), now)
        self._rates.observe((pool, tier.name, request.tenant), now)
        self._tenants.setdefault((pool, tier.name), set()).add(request.tenant)
        self._active_at.pop((pool, tier.name), None)  # its rate moved

    def _heavy(self, pool: str, tenant: str, tier: str, priority: int, now: float) -> float | None:
        """For a tenant sending far more than the mean of its tier's active tenants, the
        occupancy below which it may still be sent to an engine (None: not heavy)."""
        config = self.config
        if priority >= config.top_priority:
            return None
        mine = self._rates.rate((pool, tier, tenant), now)
        total, active = self._active(pool, tier, now)
        if mine * config.rate_window_s >= 0.5:  # counted among the active: take it out
            total, active = total - mine, active - 1
        if active <= 0:
            return None
        share = total / active
        if mine <= config.heavy_tenant_factor * share:
            return None
        dispatched = self._rates.rate((pool, tier, tenant, DISPATCHED), now)
        if dispatched < config.heavy_tenant_share * share:
            return config.heavy_tenant_occupancy
        return config.heavy_tenant_idle_occupancy

    def _active(self, pool: str, tier: str, now: float) -> tuple[float, int]:
        """The summed arrival rate and the number of the tier's tenants active lately (a
        decayed rate of at least one request per two windows), read once per ``now``: a
        decision or a poll asks it for every tenant holding requests. A quiet tenant is
        forgotten here and counted again from its next request (``_observe``)."""
        cached = self._active_at.get((pool, tier))
        if cached is not None and cached[0] == now:
            return cached[1], cached[2]
        window, rates = self.config.rate_window_s, self._rates
        total, active, quiet = 0.0, 0, []
        tenants = self._tenants[pool, tier]
        for other in tenants:
            rate = rates.rate((pool, tier, other), now)
            if rate * window < 0.5:
                quiet.append(other)
            else:
                total, active = total + rate, active + 1
        tenants.difference_update(quiet)
        self._active_at[pool, tier] = (now, total, active)
        return total, active
