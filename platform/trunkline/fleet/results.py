"""What a fleet run measured: one outcome per request, inter-token latencies, engine totals,
and the metrics derived from them (latency percentiles, throughput, prefix hits, GPU time,
cost per million tokens, SLO attainment per tier and per tenant)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from trunkline.engines.events import DecodeRun, StepResult, TokenEvent
from trunkline.fleet.stats import LogHistogram, quantile
from trunkline.snapshot import TierEntry

__all__ = ["EngineTotals", "FleetResult", "OutcomeCollector", "RequestOutcome", "attainment"]


@dataclass(slots=True)
class RequestOutcome:
    request_id: str
    tenant: str
    tier: str
    arrival: float
    endpoint: str | None = None
    status: str = "running"
    """``ok``, ``invalid`` (the engine refused it, as vLLM answers 400) or ``rejected:<code>``."""
    ttft: float = math.nan
    engine_ttft: float = math.nan
    """The engine's own part of ``ttft``: vLLM's queue plus prefill time."""
    e2e: float = math.nan
    tpot: float = math.nan
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    preemptions: int = 0
    slo_met: bool = False
    ttft_met: bool = False
    """Its first token came within the tier's TTFT SLO (``slo_met`` also needs the ITL SLO)."""
    decision: str = "admitted"
    """Admission's first answer: ``admitted``, ``queued`` (held) or ``rejected``."""
    reason: str | None = None
    """Admission's reason (``burst``, ``overloaded``, ``deadline_exceeded``, …)."""
    held_s: float = 0.0
    """Time held by admission before it was sent to an engine (part of its TTFT) or rejected."""
    prefill_endpoint: str | None = None
    """The prefill engine that prefilled it (prefill/decode disaggregation), if one did."""
    remote_prefill_s: float = 0.0
    """Time from its dispatch until its serving engine got it: the prefill on
    ``prefill_endpoint`` and its KV's transfer (part of its TTFT)."""
    decision_s: float = math.nan
    """Wall-clock time the admission decision code took on arrival."""
    decision_cpu_s: float = math.nan
    """The CPU time of that code (the wall clock also counts time the process was descheduled)."""


@dataclass(frozen=True, slots=True)
class EngineTotals:
    endpoint: str
    pool: str
    accelerator: str
    cost_per_hour: float
    busy_s: float
    requests: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    preemptions: int
    steps: int


class OutcomeCollector:
    """Fed by the simulator and by every engine's step observers."""

    def __init__(self, tiers: Mapping[str, TierEntry]) -> None:
        self.tiers = tiers
        self.outcomes: dict[str, RequestOutcome] = {}
        self.itl = LogHistogram()
        self.last_finish = 0.0

    def add(self, outcome: RequestOutcome) -> None:
        self.outcomes[outcome.request_id] = outcome

    def on_step(self, step: StepResult) -> None:
        for event in step.events:
            if event.index:
                self.itl.add(event.latency)
            if event.usage is not None:
                self._finish(event)

    def on_decode_run(self, run: DecodeRun) -> None:
        # A run's steps grow longer as the context grows: its durations are ascending.
        self.itl.add_sorted(run.durations, run.num_seqs)
        for event in run.finished:
            self._finish(event)

    def _finish(self, event: TokenEvent) -> None:
        usage = event.usage
        assert usage is not None
        outcome = self.outcomes[event.req_id]
        outcome.status = "ok"
        # The engine counts from when it got the request; the client waited the hold and the
        # remote prefill too.
        before = outcome.held_s + outcome.remote_prefill_s
        outcome.ttft = usage.ttft + before
        outcome.engine_ttft = usage.engine_ttft
        outcome.e2e = usage.e2e_latency + before
        tokens = usage.completion_tokens
        outcome.tpot = (usage.e2e_latency - usage.ttft) / (tokens - 1) if tokens > 1 else 0.0
        outcome.prompt_tokens = usage.prompt_tokens
        outcome.cached_tokens = usage.cached_tokens
        outcome.completion_tokens = tokens
        outcome.preemptions = usage.num_preemptions
        tier = self.tiers[outcome.tier]
        outcome.ttft_met = outcome.ttft * 1000 <= tier.ttft_slo_ms
        outcome.slo_met = outcome.ttft_met and (
            tier.itl_slo_ms is None or outcome.tpot * 1000 <= tier.itl_slo_ms
        )
        self.last_finish = max(self.last_finish, event.time)


@dataclass(slots=True)
class FleetResult:
    outcomes: list[RequestOutcome]
    itl: LogHistogram
    engines: list[EngineTotals]
    horizon_s: float
    """Provisioned time: from 0 to the last arrival or completion, whichever is later."""
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        done = [o for o in self.outcomes if o.status == "ok"]
        metrics = {"requests": float(len(self.outcomes)), "completed": float(len(done))}
        metrics["rejected"] = float(sum(o.status.startswith("rejected") for o in self.outcomes))
        metrics["invalid"] = float(sum(o.status == "invalid" for o in self.outcomes))
        for name, values in (
            ("ttft", [o.ttft for o in done]),
            ("e2e", [o.e2e for o in done]),
            ("tpot", [o.tpot for o in done]),
        ):
            ordered = sorted(values)
            for q in (50, 90, 99):
                metrics[f"{name}_p{q}_s"] = quantile(ordered, q / 100)
        for q in (50, 90, 99):
            metrics[f"itl_p{q}_s"] = self.itl.quantile(q / 100)
        metrics.update(self._throughput_and_cost(done))
        metrics.update(self._cache_and_load())
        metrics["slo_attainment"] = attainment(self.outcomes)
        for tier, rate in self.attainment_by("tier").items():
            metrics[f"slo_attainment_{tier}"] = rate
        for tier, rate in self.attainment_by("tier", ttft_only=True).items():
            metrics[f"ttft_attainment_{tier}"] = rate
        by_tenant = sorted(self.attainment_by("tenant").values())
        metrics["slo_attainment_tenant_min"] = by_tenant[0] if by_tenant else math.nan
        metrics["slo_attainment_tenant_p10"] = quantile(by_tenant, 0.1)
        metrics.update(self._decisions())
        metrics.update(self.extra)
        return metrics

    def _decisions(self) -> dict[str, float]:
        """Decision counts, rejections by reason, and the wall time of the decision code."""
        counts: dict[str, float] = {}
        for outcome in self.outcomes:
            key = f"decisions_{outcome.decision}"
            counts[key] = counts.get(key, 0.0) + 1
            if outcome.status.startswith("rejected:"):
                key = f"rejected_{outcome.status.removeprefix('rejected:')}"
                counts[key] = counts.get(key, 0.0) + 1
        timed = sorted(o.decision_s for o in self.outcomes if not math.isnan(o.decision_s))
        if timed:
            counts["decision_p99_ms"] = quantile(timed, 0.99) * 1000
        at_once = [o for o in self.outcomes if o.decision == "rejected"]
        if at_once and not math.isnan(at_once[0].decision_s):
            wall = sorted(o.decision_s for o in at_once)
            cpu = sorted(o.decision_cpu_s for o in at_once)
            counts["reject_decision_p99_ms"] = quantile(wall, 0.99) * 1000
            counts["reject_decision_cpu_p99_ms"] = quantile(cpu, 0.99) * 1000
        held = sorted(o.held_s for o in self.outcomes if o.decision == "queued")
        if held:
            counts["held_p99_s"] = quantile(held, 0.99)
        return counts

    def ttft_by(self, key: str) -> dict[str, list[float]]:
        """Ascending TTFTs of completed requests per tier or tenant."""
        groups: dict[str, list[float]] = {}
        for outcome in self.outcomes:
            if outcome.status == "ok":
                groups.setdefault(getattr(outcome, key), []).append(outcome.ttft)
        return {name: sorted(values) for name, values in sorted(groups.items())}

    def attainment_by(self, key: str, *, ttft_only: bool = False) -> dict[str, float]:
        """Share of requests per tier or tenant that met the SLO (rejected ones did not);
        ``ttft_only``: the TTFT objective alone."""
        groups: dict[str, list[RequestOutcome]] = {}
        for outcome in self.outcomes:
            groups.setdefault(getattr(outcome, key), []).append(outcome)
        return {name: attainment(group, ttft_only) for name, group in sorted(groups.items())}

    def _throughput_and_cost(self, done: list[RequestOutcome]) -> dict[str, float]:
        output = sum(o.completion_tokens for o in done)
        total = output + sum(o.prompt_tokens for o in done)
        horizon = self.horizon_s or math.nan
        gpu_s = horizon * len(self.engines)
        cost = sum(e.cost_per_hour for e in self.engines) * horizon / 3600
        busy = sum(e.busy_s for e in self.engines)
        return {
            "horizon_s": horizon,
            "output_tokens_per_s": output / horizon,
            "total_tokens_per_s": total / horizon,
            "goodput_rps": sum(o.slo_met for o in self.outcomes) / horizon,
            "gpu_seconds": gpu_s,
            "busy_gpu_seconds": busy,
            "utilisation": busy / gpu_s,
            "output_tokens_per_gpu_s": output / gpu_s,
            "cost_usd": cost,
            "cost_per_1m_tokens_usd": cost / total * 1e6 if total else math.nan,
            "cost_per_1m_output_tokens_usd": cost / output * 1e6 if output else math.nan,
        }

    def _cache_and_load(self) -> dict[str, float]:
        prompt = sum(o.prompt_tokens for o in self.outcomes if o.status == "ok")
        cached = sum(o.cached_tokens for o in self.outcomes if o.status == "ok")
        queries = sum(e.prefix_cache_queries for e in self.engines)
        hits = sum(e.prefix_cache_hits for e in self.engines)
        busy = [e.busy_s for e in self.engines]
        routed = [e.requests for e in self.engines]
        return {
            "prefix_hit_rate": cached / prompt if prompt else 0.0,
            "engine_prefix_hit_rate": hits / queries if queries else 0.0,
            "preemptions": float(sum(e.preemptions for e in self.engines)),
            "busy_max_over_mean": _max_over_mean(busy),
            "requests_max_over_mean": _max_over_mean(routed),
        }


def attainment(outcomes: Iterable[RequestOutcome], ttft_only: bool = False) -> float:
    """The share of ``outcomes`` that met their tier's SLO (its TTFT part alone with
    ``ttft_only``); refused requests count as missed. NaN when there are none."""
    items = list(outcomes)
    met = sum(o.ttft_met if ttft_only else o.slo_met for o in items)
    return met / len(items) if items else math.nan


def _max_over_mean(values: list[float] | list[int]) -> float:
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean else math.nan
