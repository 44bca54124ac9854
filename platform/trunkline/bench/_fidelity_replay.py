"""One load on real vLLM and in the simulator, each reduced to the figures fidelity compares.

Per load, both sides give: ``ttft_p50_s`` and ``ttft_mean_s`` (as the client sees them),
``throughput_tok_s`` (output tokens over the load's span), ``itl_mean_s`` (real: vLLM's own
histogram; simulated: the engine's steps) and ``engine_ttft_mean_s`` (vLLM's queue plus prefill
time on both sides, counted from when the engine core's scheduler took the request in: the end
of the step running when it reached the engine, which the client's TTFT also waits for). Real
vLLM adds ``engine_cpu_wait_share``: how much of the engine's runnable time it spent waiting for
its core (other processes had it). A simulated side given a reference share (the calibration's)
runs its steps slower or faster by the ratio of the core's share the engine got in that load to
the share it got during calibration.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trunkline.bench._engine_side import (
    CpuTimes,
    EngineTotals,
    engine_thread_cpu_times,
    engine_totals,
    process_group,
)
from trunkline.engines.calibration import cpu_share_factor, stretch_steps
from trunkline.engines.profiles import AcceleratorProfile
from trunkline.fleet.replay import measured_summary, outcome_summary, simulate_replay
from trunkline.workloads import WorkloadRequest
from trunkline.workloads.driver import Measured

__all__ = ["RealRun", "SimSide", "measure", "simulated_summary"]


@dataclass(frozen=True, slots=True)
class RealRun:
    measured: list[Measured]
    engine: EngineTotals
    cpu: CpuTimes

    def summary(self) -> dict[str, float]:
        figures = measured_summary(self.measured, self.engine.itl_mean_s)
        figures["engine_ttft_mean_s"] = self.engine.ttft_mean_s
        figures["engine_cpu_wait_share"] = self.cpu.wait_share
        return figures


@dataclass(frozen=True, slots=True)
class SimSide:
    """A simulated side: a profile, and the calibration's waiting share if it follows the
    engine's measured share of its core."""

    profile: AcceleratorProfile
    reference_wait_share: float | None = None

    def profile_for(self, run: RealRun) -> AcceleratorProfile:
        if self.reference_wait_share is None:
            return self.profile
        factor = cpu_share_factor(self.reference_wait_share, run.cpu.wait_share)
        return stretch_steps(self.profile, factor)


def simulated_summary(
    side: SimSide,
    replicas: int,
    requests: Sequence[WorkloadRequest],
    run: RealRun,
    policy: str,
) -> tuple[dict[str, float], list[float]]:
    """The simulator's figures for the requests at their real send times, and its TTFTs."""
    profile = side.profile_for(run)
    outcomes = simulate_replay(profile, replicas, requests, run.measured, policy)
    figures = outcome_summary(outcomes)
    done = [o for o in outcomes if o.status == "ok"]
    if not done:
        raise RuntimeError("the simulator finished none of the load's requests")
    figures["engine_ttft_mean_s"] = statistics.fmean(o.engine_ttft for o in done)
    return figures, [o.ttft for o in done]


def measure(
    servers: Sequence[Any], requests: list[WorkloadRequest], policy: str, engine_cpus: Sequence[int]
) -> RealRun:
    """Replay ``requests`` on real vLLM servers (the launcher's ``VllmServer``s, whose engine
    threads are bound to ``engine_cpus``) through ``policy``."""
    import httpx

    from trunkline.gateway.routing import make_policy
    from trunkline.workloads.driver import HttpEndpoint, replay_http

    endpoints = [
        HttpEndpoint(f"r{i}", s.url, s.model_name, s.block_size) for i, s in enumerate(servers)
    ]
    groups = [process_group(s.proc.popen.pid) for s in servers]

    def cpu_times() -> CpuTimes:
        times = [engine_thread_cpu_times(g, c) for g, c in zip(groups, engine_cpus, strict=True)]
        return CpuTimes(sum(t.run_s for t in times), sum(t.wait_s for t in times))

    async def totals(client: httpx.AsyncClient) -> EngineTotals:
        pages = await asyncio.gather(*(client.get(f"{e.url}/metrics") for e in endpoints))
        readings = [engine_totals(p.text, e.model) for p, e in zip(pages, endpoints, strict=True)]
        total = readings[0]
        for reading in readings[1:]:
            total = total + reading
        return total

    async def run() -> RealRun:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=120.0, limits=limits) as client:
            before, cpu_before = await totals(client), cpu_times()
            measured = await replay_http(requests, endpoints, make_policy(policy), client=client)
            after, cpu_after = await totals(client), cpu_times()
        return RealRun(measured, after - before, cpu_after - cpu_before)

    result = asyncio.run(run())
    failed = [m for m in result.measured if m.error]
    if failed:
        raise RuntimeError(f"{len(failed)} requests to real vLLM failed, e.g. {failed[0].error}")
    return result
