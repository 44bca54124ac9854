"""SLO admission in the fleet simulator: the gateway's :class:`AdmissionPolicy` in virtual time.

:class:`VirtualAdmission` asks the policy about each arrival (timing the decision code on the
wall clock), keeps what the policy holds, and between arrivals steps the engines on a short tick,
polling the policy with their fresh loads, so held requests are admitted as engines free up or
rejected once their deadline cannot be met — what the gateway's async adapter does on each
``/metrics`` scrape. Decisions are written into each request's outcome. The engines' own prefix
caches serve the predictor as its prefix index (the precise index KV events give a gateway).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trunkline.engines.virtual import VirtualEngine
from trunkline.fleet.results import RequestOutcome
from trunkline.gateway.admission import QUEUED, REJECTED, AdmissionPolicy, Decision
from trunkline.gateway.routing import EndpointLoad, EndpointView, PromptView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["EngineCacheIndex", "VirtualAdmission", "cached_prompt_tokens", "engine_load"]

Send = Callable[[int, float], None]
"""Dispatch a request to the endpoint at this index of its ranking, at this virtual time."""


def engine_load(
    engine: VirtualEngine, base: EndpointLoad, prefill_estimates: Mapping[str, int] | None = None
) -> EndpointLoad:
    """``base`` (what ``/metrics`` shows) plus the prompt tokens not yet prefilled and the
    current batch's decode step. A request not scheduled yet counts as its entry in
    ``prefill_estimates`` when it has one (what a gateway estimates: its prompt less what the
    cache held when it was sent), else as its whole prompt."""
    core = engine.core
    estimates = prefill_estimates or {}
    queued = sum(
        # A remote prefill preempted lost the KV it was given: its whole prompt is to prefill.
        estimates.get(r.req_id, r.num_prompt_tokens)
        if r.num_computed_tokens == 0 and not (r.remote_prefill and r.num_preemptions)
        else r.num_prompt_tokens - r.num_computed_tokens
        for r in core.waiting
    )
    queued += sum(
        r.num_prompt_tokens - r.num_computed_tokens
        for r in core.running
        if r.num_computed_tokens < r.num_prompt_tokens
    )
    # The decode step of the batch running now: what the inter-token latency in ``/metrics``
    # shows a gateway (a loaded engine's step is 2-3x an idle one's).
    running = len(core.running)
    context = sum(len(r.token_ids) for r in core.running)
    step_s = core.profile.step_time(running, running, 0, context) if running else 0.0
    return dataclasses.replace(
        base,
        queued_prompt_tokens=float(queued),
        unaccounted_waiting=0.0,  # every waiting request's prompt is in ``queued``
        decode_step_s=step_s,
    )


class EngineCacheIndex:
    """Prompt tokens an engine's prefix cache holds right now (a side-effect-free lookup)."""

    def __init__(self, engines: Mapping[str, VirtualEngine]) -> None:
        self._engines = engines

    def cached_tokens(self, prompt: PromptView, endpoint: EndpointView) -> int:
        engine = self._engines.get(endpoint.key)
        return 0 if engine is None else cached_prompt_tokens(engine, prompt)


def cached_prompt_tokens(engine: VirtualEngine, prompt: PromptView) -> int:
    """Prompt tokens ``engine``'s prefix cache holds right now (side-effect free)."""
    block_size = engine.core.profile.block_size
    hits = engine.core.kv.lookup(prompt.block_hashes(block_size), prompt.num_tokens)
    return len(hits) * block_size


@dataclass(slots=True)
class _Pending:
    outcome: RequestOutcome
    send: Send


class VirtualAdmission:
    def __init__(
        self,
        policy: AdmissionPolicy,
        engines: Mapping[str, VirtualEngine],
        loads: Callable[[], Mapping[str, EndpointLoad]],
        *,
        tick_s: float = 0.02,
    ) -> None:
        self.policy = policy
        if policy.predictor.prefix_index is None:
            policy.predictor.prefix_index = EngineCacheIndex(engines)
        self._engines = list(engines.values())
        self._loads = loads
        self.tick_s = tick_s
        self._pending: dict[int, _Pending] = {}
        self._clock = 0.0

    def arrive(
        self,
        request: RequestView,
        tier: TierEntry,
        ranked: Sequence[EndpointView],
        outcome: RequestOutcome,
        now: float,
        send: Send,
    ) -> Decision:
        """Decide on a new request; admitted ones are sent at once, held ones later."""
        if request.prompt is not None and ranked:
            # A gateway's prefix-affinity scorer hashes the prompt while routing, before admission.
            request.prompt.block_hashes(ranked[0].block_size)
        started, cpu = time.perf_counter(), time.thread_time()
        decision = self.policy.decide(request, tier, ranked, now)
        outcome.decision_s = time.perf_counter() - started
        outcome.decision_cpu_s = time.thread_time() - cpu
        self._clock = max(self._clock, now)
        outcome.decision = decision.outcome
        if decision.outcome == QUEUED:
            assert decision.ticket is not None
            self._pending[decision.ticket] = _Pending(outcome, send)
        else:
            self._apply(decision, outcome, send, now)
        return decision

    def run_until(self, until: float) -> None:
        """Step the engines tick by tick while requests are held, re-evaluating them each tick."""
        while self._pending and self._clock + self.tick_s <= until:
            self._clock += self.tick_s
            for engine in self._engines:
                engine.advance_to(self._clock)
            for release in self.policy.poll(self._clock, self._loads()):
                pending = self._pending.pop(release.held.ticket, None)
                if pending is not None:
                    self._apply(release.decision, pending.outcome, pending.send, self._clock)
        if math.isinf(until) and self._pending:
            raise RuntimeError("held requests outlived the run")  # max_hold_s bounds every hold

    def _apply(self, decision: Decision, outcome: RequestOutcome, send: Send, now: float) -> None:
        outcome.reason = decision.reason
        outcome.held_s = now - outcome.arrival
        if decision.outcome == REJECTED:
            outcome.status = f"rejected:{decision.reason}"
            return
        assert decision.endpoint is not None
        send(decision.endpoint, now)
