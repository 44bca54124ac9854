"""Who got the CPU during a real-vLLM routing run: each replica's model worker, the rest of vLLM
(API servers, engine cores, the workers' helper threads), the gateway, the load generator and
the whole machine.

A reading sums CPU seconds since each process started; two readings around a run are
subtracted and divided by the run's wall time (:func:`cpu_shares`): 1.0 is one core busy the
whole run. A worker's share is its main thread's (``/proc/<pid>/task/<pid>/schedstat``, see
:mod:`trunkline.bench._engine_side`), with the time it waited runnable for a core another
process held; the machine's is ``/proc/stat`` (every process on it, other users' too).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from trunkline.bench._engine_side import CpuTimes, engine_thread_cpu_times, process_group
from trunkline.bench.report import Metrics

__all__ = [
    "CpuReading",
    "Replica",
    "cpu_shares",
    "machine_busy_s",
    "pin",
    "process_cpu_s",
    "read_cpu",
]

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Replica:
    """A vLLM server's process group and the core its model worker is bound to."""

    pgid: int
    worker_cpu: int


@dataclass(frozen=True, slots=True)
class CpuReading:
    workers: tuple[CpuTimes, ...]
    """Each replica's worker main thread: run and runnable-but-waiting seconds."""
    replicas_s: tuple[float, ...]
    """Each replica's every process and thread, the worker included."""
    gateway_s: float
    load_generator_s: float
    machine_busy_s: float

    def __sub__(self, before: CpuReading) -> CpuReading:
        return CpuReading(
            tuple(a - b for a, b in zip(self.workers, before.workers, strict=True)),
            tuple(a - b for a, b in zip(self.replicas_s, before.replicas_s, strict=True)),
            self.gateway_s - before.gateway_s,
            self.load_generator_s - before.load_generator_s,
            self.machine_busy_s - before.machine_busy_s,
        )


def process_cpu_s(pids: Iterable[int], proc: Path = PROC) -> float:
    """User plus system CPU seconds of ``pids`` (all their threads); ended processes count 0."""
    ticks = 0
    for pid in pids:
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            continue
        # After the ")" closing the command name: state is field 3, utime 14, stime 15.
        fields = stat.rpartition(")")[2].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_s(proc: Path = PROC) -> float:
    """CPU seconds every core spent neither idle nor waiting for I/O since boot."""
    fields = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def read_cpu(replicas: Sequence[Replica], gateway_pid: int | None) -> CpuReading:
    groups = [process_group(r.pgid) for r in replicas]
    return CpuReading(
        workers=tuple(
            engine_thread_cpu_times(g, r.worker_cpu) for g, r in zip(groups, replicas, strict=True)
        ),
        replicas_s=tuple(process_cpu_s(g) for g in groups),
        gateway_s=process_cpu_s([gateway_pid]) if gateway_pid else 0.0,
        load_generator_s=time.process_time(),
        machine_busy_s=machine_busy_s(),
    )


def cpu_shares(delta: CpuReading, elapsed_s: float) -> Metrics:
    """Cores' worth of CPU each party used over ``elapsed_s`` (from two readings' difference)."""
    if elapsed_s <= 0:
        return {}
    shares: Metrics = {}
    for i, worker in enumerate(delta.workers):
        shares[f"cpu_worker_{i}"] = worker.run_s / elapsed_s
        shares[f"cpu_worker_{i}_wait_share"] = worker.wait_share
    worker_run = sum(w.run_s for w in delta.workers)
    shares["cpu_workers"] = worker_run / elapsed_s
    shares["cpu_vllm_rest"] = (sum(delta.replicas_s) - worker_run) / elapsed_s
    shares["cpu_gateway"] = delta.gateway_s / elapsed_s
    shares["cpu_load_generator"] = delta.load_generator_s / elapsed_s
    shares["cpu_machine"] = delta.machine_busy_s / elapsed_s
    return shares


def pin(pids: Iterable[int], cpus: set[int], proc: Path = PROC) -> None:
    """Bind every thread of ``pids`` to ``cpus`` (threads they start later inherit it);
    processes or threads that ended meanwhile are skipped."""
    for pid in pids:
        try:
            tids = [int(task.name) for task in (proc / str(pid) / "task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
            except (ProcessLookupError, FileNotFoundError):
                continue
