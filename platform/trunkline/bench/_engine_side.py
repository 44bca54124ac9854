"""What real vLLM's engine itself measured during a load, free of the client and the API server.

Two readings, each taken before and after a load and subtracted:

* vLLM's own histograms (``/metrics``), timed by the engine core: inter-token latency
  (``vllm:inter_token_latency_seconds``), and TTFT as the engine core sees it — the time a
  request waited in the scheduler's queue (``vllm:request_queue_time_seconds``) plus the time
  from its first scheduling to its first token (``vllm:request_prefill_time_seconds``). Both
  count from when the engine core queued the request, so the API server's delay is left out.
* The engine's CPU accounting (``/proc/<pid>/schedstat`` of each process of the server whose
  main thread is bound to the engine core: vLLM's model worker): time run and time spent
  runnable but waiting for the core. The waiting share says how much of the core other
  processes took: a figure about the machine, not the engine. Only main threads count: vLLM's
  helper threads (gloo, ZMQ) sleep-wake on the same core and would swamp the figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "ENGINE_HISTOGRAMS",
    "CpuTimes",
    "EngineTotals",
    "engine_thread_cpu_times",
    "engine_totals",
    "process_group",
]

ENGINE_HISTOGRAMS = (
    "vllm:inter_token_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_prefill_time_seconds",
)


@dataclass(frozen=True, slots=True)
class EngineTotals:
    """``(sum, count)`` of each engine histogram at one reading; subtract two readings."""

    totals: Mapping[str, tuple[float, float]]

    def __sub__(self, before: EngineTotals) -> EngineTotals:
        return EngineTotals(
            {
                name: (total - before.totals[name][0], count - before.totals[name][1])
                for name, (total, count) in self.totals.items()
            }
        )

    def __add__(self, other: EngineTotals) -> EngineTotals:
        return EngineTotals(
            {
                name: (total + other.totals[name][0], count + other.totals[name][1])
                for name, (total, count) in self.totals.items()
            }
        )

    def mean(self, name: str) -> float:
        total, count = self.totals[name]
        return total / count if count else 0.0

    @property
    def itl_mean_s(self) -> float:
        return self.mean("vllm:inter_token_latency_seconds")

    @property
    def ttft_mean_s(self) -> float:
        """Mean engine-side TTFT: scheduler queue plus first scheduling to first token."""
        return self.mean("vllm:request_queue_time_seconds") + self.mean(
            "vllm:request_prefill_time_seconds"
        )


def engine_totals(page: str, model: str) -> EngineTotals:
    """The engine histograms of ``model`` on a ``/metrics`` page (zeros for a missing one)."""
    totals = {name: [0.0, 0.0] for name in ENGINE_HISTOGRAMS}
    for family in text_string_to_metric_families(page):
        if family.name not in totals:
            continue
        for sample in family.samples:
            suffix = sample.name.rpartition("_")[2]
            if suffix in ("sum", "count") and sample.labels.get("model_name", model) == model:
                totals[family.name][0 if suffix == "sum" else 1] += sample.value
    return EngineTotals({name: (s, c) for name, (s, c) in totals.items()})


@dataclass(frozen=True, slots=True)
class CpuTimes:
    run_s: float
    wait_s: float
    """Runnable but not running: another process had the CPU."""

    def __sub__(self, before: CpuTimes) -> CpuTimes:
        return CpuTimes(self.run_s - before.run_s, self.wait_s - before.wait_s)

    @property
    def wait_share(self) -> float:
        busy = self.run_s + self.wait_s
        return self.wait_s / busy if busy > 0 else 0.0


def engine_thread_cpu_times(pids: Iterable[int], cpu: int, proc: Path = Path("/proc")) -> CpuTimes:
    """Summed run and wait times of the main threads of ``pids`` allowed only on ``cpu``."""
    run = wait = 0
    for pid in pids:
        task = proc / str(pid) / "task" / str(pid)
        try:
            allowed = _allowed_cpus(task / "status")
            fields = (task / "schedstat").read_text().split()
        except OSError:  # the process ended meanwhile
            continue
        if allowed == {cpu}:
            run += int(fields[0])
            wait += int(fields[1])
    return CpuTimes(run / 1e9, wait / 1e9)


def process_group(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Every process whose process group is ``pgid``."""
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the ")" closing the command name: state, ppid, pgrp, ...
        if int(stat.rpartition(")")[2].split()[2]) == pgid:
            members.append(int(entry.name))
    return members


def _allowed_cpus(status: Path) -> set[int]:
    for line in status.read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return _cpu_list(line.partition(":")[2].strip())
    return set()


def _cpu_list(text: str) -> set[int]:
    """``0-2,5`` -> {0, 1, 2, 5}."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus
