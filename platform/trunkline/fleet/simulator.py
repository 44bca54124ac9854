"""The fleet simulator: a workload through the gateway's routing and admission code onto pools
of simulated vLLM engines, in virtual time.

For each request, in arrival order: every engine runs the steps that start before the arrival
(engines only interact through routing, so each advances on its own), the gateway's
:func:`~trunkline.gateway.routing.eligible` filters the snapshot's endpoints, the
:class:`~trunkline.gateway.routing.Router` orders them with the routing policy over each
engine's current load (what ``/metrics`` would show), the admission hook admits or rejects, and
the first endpoint queues the request. After the last arrival every engine drains.

With an :class:`~trunkline.gateway.admission.AdmissionPolicy`, admission decides between routing
and the engine: admitted requests go to the endpoint it picked, held ones wait in its queues
while the engines step on (see :class:`~trunkline.fleet.admission.VirtualAdmission`), rejected
ones are recorded with their reason. Without one, every request goes to the first endpoint
(first come, first served: the baseline).

Pools with the ``prefill`` role (:mod:`trunkline.gateway.routing.phases`) never serve a
request: when the serving endpoint lacks enough of a prompt, the ranking's first prefill
endpoint prefills it and hands its KV over (:mod:`trunkline.fleet.handoffs`). Prefill engines
only take arrivals and serving engines only take arrivals and handoffs, so before each arrival
the prefill engines step to it first, then the handoffs due before it reach their engines in
time order, then the serving engines step to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from trunkline.engines.core import EngineCore
from trunkline.engines.events import KVCacheEvent, KVEventSink
from trunkline.engines.hardware import MODELS
from trunkline.engines.virtual import VirtualEngine
from trunkline.fleet.admission import VirtualAdmission, cached_prompt_tokens, engine_load
from trunkline.fleet.handoffs import Handoff, Handoffs, prefill_request_id
from trunkline.fleet.results import EngineTotals, FleetResult, OutcomeCollector, RequestOutcome
from trunkline.fleet.spec import FleetSpec, PoolSpec, build_snapshot, endpoint_id
from trunkline.gateway.admission import AdmissionPolicy
from trunkline.gateway.routing import (
    Candidate,
    EndpointLoad,
    EndpointView,
    KvEventIndex,
    RequestView,
    Router,
    RoutingPolicy,
    apply_kv_events,
    eligible,
    endpoint_view,
    kv_event_index,
)
from trunkline.gateway.routing.phases import PREFILL, prefill_candidates, serving_candidates
from trunkline.workloads.prompts import Prompt
from trunkline.workloads.schemas import Workload, WorkloadRequest

__all__ = ["SimulatedEndpoint", "simulate"]


@dataclass(slots=True)
class SimulatedEndpoint:
    pool: PoolSpec
    engine: VirtualEngine
    requests: int = 0
    prefill_estimates: dict[str, int] = field(default_factory=dict)
    """Per request sent here, the prompt tokens it will likely prefill: its prompt less what
    the engine's cache held when it was sent (a gateway's estimate from its prefix index)."""

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
    endpoints = _build_endpoints(spec, collector, batch_decodes, kv_event_index(policy))
    engines = list(endpoints.values())
    router = Router(policy)
    gate: VirtualAdmission | None = None
    prefillers = [e for e in engines if e.pool.role == PREFILL]
    servers = [e for e in engines if e.pool.role != PREFILL]
    handoffs = Handoffs()
    for key, endpoint in endpoints.items():
        if endpoint.pool.role == PREFILL:
            endpoint.engine.observe(on_step=handoffs.observer(key), on_decode_run=None)

    def current_loads() -> dict[str, EndpointLoad]:
        # What a gateway's engine state shows routing and admission alike: the scraped gauges,
        # the prompt tokens not yet prefilled and the current decode step.
        return {
            key: engine_load(e.engine, e.load(), e.prefill_estimates)
            for key, e in endpoints.items()
        }

    if admission is not None:
        if prefillers:
            raise ValueError("admission with prefill pools is not simulated")
        engine_of = {key: endpoint.engine for key, endpoint in endpoints.items()}
        gate = VirtualAdmission(admission, engine_of, current_loads)
    requests: Iterable[WorkloadRequest] = workload.requests()
    if limit is not None:
        requests = itertools.islice(requests, limit)

    def hand_over_before(until: float) -> None:
        """Give the serving engines the requests whose KV arrived before ``until``."""
        for at, handoff in handoffs.arrived_before(until):
            for endpoint in servers:
                endpoint.engine.advance_to(at)
            handoff.outcome.remote_prefill_s = at - handoff.outcome.arrival
            _submit(endpoints[handoff.serve_key], handoff.request, handoff.outcome, at, True)

    last_arrival = 0.0
    for request in requests:
        now = last_arrival = request.arrival
        if gate is not None:
            gate.run_until(now)
        for endpoint in prefillers:
            endpoint.engine.advance_to(now)
        hand_over_before(now)
        for endpoint in servers:
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
        loads = current_loads()
        ordered = router.order(view, eligible(snapshot, alias, tenant, tier), loads)
        serving = serving_candidates(ordered)
        if not serving:
            outcome.status = "rejected:no_endpoint"
            continue
        if prefillers:
            target = endpoints[serving[0].endpoint.id]
            uncached = request.prompt.num_tokens - cached_prompt_tokens(
                target.engine, request.prompt
            )
            prefill = prefill_candidates(ordered, uncached)
            if prefill:
                transfer_s = uncached * _kv_bytes_per_token(target) / spec.kv_transfer_bytes_per_s
                handoff = Handoff(serving[0].endpoint.id, request, outcome, transfer_s)
                for chosen in (prefill[0], serving[0]):
                    policy.routed(view, endpoint_view(chosen, loads[chosen.endpoint.id]))
                _prefill(endpoints, prefill[0].endpoint.id, handoffs, handoff, now)
                continue
        views = [endpoint_view(c, loads[c.endpoint.id]) for c in serving]
        send = _sender(policy, endpoints, view, serving, views, request, outcome)
        if gate is None:
            send(0, now)
        else:
            gate.arrive(view, tier, views, outcome, now, send)
    if gate is not None:
        gate.run_until(math.inf)
    for endpoint in prefillers:
        endpoint.engine.drain()
    hand_over_before(math.inf)
    for endpoint in servers:
        endpoint.engine.drain()
    totals = [_totals(key, endpoint) for key, endpoint in endpoints.items()]
    horizon = max(last_arrival, collector.last_finish)
    return FleetResult(list(collector.outcomes.values()), collector.itl, totals, horizon)


def _build_endpoints(
    spec: FleetSpec,
    collector: OutcomeCollector,
    batch_decodes: bool,
    kv_events: KvEventIndex | None = None,
) -> dict[str, SimulatedEndpoint]:
    """One engine per replica; with ``kv_events`` (a precise prefix policy's index, from
    :func:`~trunkline.gateway.routing.kv_event_index`) each engine's KV-cache events feed it at
    the end of every step, as a ZMQ subscriber would."""
    endpoints: dict[str, SimulatedEndpoint] = {}
    for pool_index, pool in enumerate(spec.pools):
        for index in range(pool.replicas):
            key = endpoint_id(pool.name, index)
            sink = None if kv_events is None else _kv_event_sink(kv_events, key)
            core = EngineCore(
                pool.engine_profile,
                seed=spec.seed * 1000 + pool_index * 100 + index,
                kv_event_sink=sink,
            )
            engine = VirtualEngine(
                core,
                on_step=collector.on_step,
                on_decode_run=collector.on_decode_run,
                batch_decodes=batch_decodes,
            )
            endpoints[key] = SimulatedEndpoint(pool, engine)
    return endpoints


def _kv_event_sink(index: KvEventIndex, key: str) -> KVEventSink:
    def sink(now: float, events: Sequence[KVCacheEvent]) -> None:
        apply_kv_events(index, key, events)

    return sink


def _sender(
    policy: RoutingPolicy,
    endpoints: dict[str, SimulatedEndpoint],
    view: RequestView,
    ordered: list[Candidate],
    views: list[EndpointView],
    request: WorkloadRequest,
    outcome: RequestOutcome,
) -> Callable[[int, float], None]:
    """Sends the request to the endpoint at an index of its ranking, at a time (now or later)."""

    def send(index: int, at: float) -> None:
        policy.routed(view, views[index])
        key = ordered[index].endpoint.id
        outcome.endpoint = key
        _submit(endpoints[key], request, outcome, at)

    return send


def _submit(
    endpoint: SimulatedEndpoint,
    request: WorkloadRequest,
    outcome: RequestOutcome,
    at: float,
    remote_prefill: bool = False,
) -> None:
    queued = _queue(
        endpoint, request.request_id, request.prompt, request.max_tokens, at,
        output_tokens=request.output_tokens, remote_prefill=remote_prefill,
    )  # fmt: skip
    if not queued:
        outcome.status = "invalid"  # vLLM answers 400: prompt + max_tokens over the context


def _prefill(
    endpoints: dict[str, SimulatedEndpoint],
    key: str,
    handoffs: Handoffs,
    handoff: Handoff,
    at: float,
) -> None:
    """Send ``handoff``'s prompt to the prefill engine ``key``, as a request of one token."""
    request, outcome = handoff.request, handoff.outcome
    try:
        # The serving engine refuses what does not fit its context (vLLM's 400), before any
        # prefill is spent on it.
        endpoints[handoff.serve_key].engine.core.check_request(
            request.prompt.num_tokens, request.max_tokens
        )
    except ValueError:
        outcome.status = "invalid"
        return
    if not _queue(endpoints[key], prefill_request_id(request.request_id), request.prompt, 1, at):
        outcome.status = "invalid"
        return
    handoffs.expect(handoff)
    outcome.endpoint, outcome.prefill_endpoint = handoff.serve_key, key


def _queue(
    endpoint: SimulatedEndpoint,
    req_id: str,
    prompt: Prompt,
    max_tokens: int,
    at: float,
    *,
    output_tokens: Sequence[int] | None = None,
    remote_prefill: bool = False,
) -> bool:
    """Submit a request to ``endpoint``'s engine and note the prompt tokens it will likely
    prefill (what a gateway estimates); False when the engine refuses it."""
    engine = endpoint.engine
    cached = cached_prompt_tokens(engine, prompt) if engine.core.enable_prefix_caching else 0
    try:
        engine.submit(
            req_id,
            prompt.token_ids,
            max_tokens,
            at,
            cache_salt=prompt.cache_salt,
            output_tokens=output_tokens,
            block_hashes=prompt.block_hashes(engine.core.profile.block_size),
            remote_prefill=remote_prefill,
        )
    except ValueError:
        return False
    # A remote prefill's prompt is computed: only its last token is left.
    left = 1 if remote_prefill else max(prompt.num_tokens - cached, 1)
    endpoint.prefill_estimates[req_id] = left
    endpoint.requests += 1
    return True


def _kv_bytes_per_token(endpoint: SimulatedEndpoint) -> int:
    """KV bytes a prompt token takes on ``endpoint``'s model (0 for a model without a shape)."""
    model = MODELS.get(endpoint.engine.core.profile.model)
    return 0 if model is None else model.kv_bytes_per_token


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
