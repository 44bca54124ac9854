"""The fleet simulator: a workload through the gateway's routing and admission code onto pools
of simulated vLLM engines, in virtual time.

For each request, in arrival order: every engine runs the steps that start before the arrival
(engines only interact through routing, so each advances on its own), the gateway's
:func:`~trunkline.gateway.routing.eligible` filters the snapshot's endpoints, the
:class:`~trunkline.gateway.routing.Router` orders them with the routing policy over each
engine's current load (what ``/metrics`` would show), the admission hook admits or rejects, and
the first endpoint queues the request. After the last arrival every engine drains.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from trunkline.engines.core import EngineCore
from trunkline.engines.virtual import VirtualEngine
from trunkline.fleet.admission import AdmissionPolicy, AdmitAll
from trunkline.fleet.results import EngineTotals, FleetResult, OutcomeCollector, RequestOutcome
from trunkline.fleet.spec import FleetSpec, PoolSpec, build_snapshot, endpoint_id
from trunkline.gateway.routing import (
    EndpointLoad,
    RequestView,
    Router,
    RoutingPolicy,
    eligible,
    endpoint_view,
)
from trunkline.workloads.schemas import Workload, WorkloadRequest

__all__ = ["SimulatedEndpoint", "simulate"]


@dataclass(slots=True)
class SimulatedEndpoint:
    pool: PoolSpec
    engine: VirtualEngine
    requests: int = 0

    def load(self) -> EndpointLoad:
        core = self.engine.core
        return EndpointLoad(float(len(core.running)), float(len(core.waiting)), core.kv_cache_usage)


def simulate(
    spec: FleetSpec,
    policy: RoutingPolicy,
    workload: Workload,
    *,
    admission: AdmissionPolicy | None = None,
    limit: int | None = None,
    batch_decodes: bool = True,
) -> FleetResult:
    """Run ``workload`` (its first ``limit`` requests) through ``policy`` on the fleet ``spec``."""
    snapshot = build_snapshot(spec, workload.tenants)
    alias = snapshot.aliases[spec.alias]
    collector = OutcomeCollector(snapshot.tiers)
    endpoints = _build_endpoints(spec, collector, batch_decodes)
    engines = list(endpoints.values())
    router = Router(policy)
    admit = admission or AdmitAll()
    requests: Iterable[WorkloadRequest] = workload.requests()
    if limit is not None:
        requests = itertools.islice(requests, limit)
    last_arrival = 0.0
    for request in requests:
        now = last_arrival = request.arrival
        for endpoint in engines:
            endpoint.engine.advance_to(now)
        tenant = snapshot.tenants[request.tenant]
        tier = snapshot.tiers[tenant.tier]
        outcome = RequestOutcome(request.request_id, tenant.id, tier.name, now)
        collector.add(outcome)
        view = RequestView(
            request.request_id,
            tenant.id,
            tier.name,
            alias.alias,
            prompt_tokens=request.prompt.num_tokens,
            max_tokens=request.max_tokens,
            prompt=request.prompt,
        )
        loads = {key: endpoint.load() for key, endpoint in endpoints.items()}
        ordered = router.order(view, eligible(snapshot, alias, tenant, tier), loads)
        if not ordered:
            outcome.status = "rejected:no_endpoint"
            continue
        chosen = ordered[0]
        chosen_view = endpoint_view(chosen, loads[chosen.endpoint.id])
        decision = admit.admit(view, tier, chosen_view, now)
        if not decision.admitted:
            outcome.status = f"rejected:{decision.reason or 'admission'}"
            continue
        policy.routed(view, chosen_view)
        target = endpoints[chosen.endpoint.id]
        outcome.endpoint = chosen.endpoint.id
        _submit(target, request, outcome)
    for endpoint in engines:
        endpoint.engine.drain()
    totals = [_totals(key, endpoint) for key, endpoint in endpoints.items()]
    horizon = max(last_arrival, collector.last_finish)
    return FleetResult(list(collector.outcomes.values()), collector.itl, totals, horizon)


def _build_endpoints(
    spec: FleetSpec, collector: OutcomeCollector, batch_decodes: bool
) -> dict[str, SimulatedEndpoint]:
    endpoints: dict[str, SimulatedEndpoint] = {}
    for pool_index, pool in enumerate(spec.pools):
        for index in range(pool.replicas):
            core = EngineCore(pool.engine_profile, seed=spec.seed * 1000 + pool_index * 100 + index)
            engine = VirtualEngine(
                core,
                on_step=collector.on_step,
                on_decode_run=collector.on_decode_run,
                batch_decodes=batch_decodes,
            )
            endpoints[endpoint_id(pool.name, index)] = SimulatedEndpoint(pool, engine)
    return endpoints


def _submit(endpoint: SimulatedEndpoint, request: WorkloadRequest, outcome: RequestOutcome) -> None:
    engine = endpoint.engine
    prompt = request.prompt
    block_size = engine.core.profile.block_size
    try:
        engine.submit(
            request.request_id,
            prompt.token_ids,
            request.max_tokens,
            request.arrival,
            cache_salt=prompt.cache_salt,
            output_tokens=request.output_tokens,
            block_hashes=prompt.block_hashes(block_size),
        )
    except ValueError:
        outcome.status = "invalid"  # vLLM answers 400: prompt + max_tokens over the context
        return
    endpoint.requests += 1


def _totals(key: str, endpoint: SimulatedEndpoint) -> EngineTotals:
    core = endpoint.engine.core
    return EngineTotals(
        endpoint=key,
        pool=endpoint.pool.name,
        accelerator=core.profile.name,
        cost_per_hour=endpoint.pool.hourly_cost,
        busy_s=endpoint.engine.busy_time,
        requests=endpoint.requests,
        prefix_cache_queries=core.counters.prefix_cache_queries,
        prefix_cache_hits=core.counters.prefix_cache_hits,
        preemptions=core.counters.preemptions,
        steps=endpoint.engine.num_steps,
    )
