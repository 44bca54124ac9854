"""Connection hand-out time: httpcore 1.0.9's pool against the gateway's
(:class:`~trunkline.gateway.connection_pool.ReclaimingConnectionPool`), on the same pools.

A pool hands out connections at every request's start and end, on the event loop that relays
every stream. Two states are timed, each for both pools in alternating blocks (so machine noise
hits both alike), on the thread's CPU clock:

- ``idle_N``: a burst left ``N`` connections idle (the gateway holds up to 1,000,
  ``TRUNKLINE_GATEWAY__MAX_CONNECTIONS``), no request waiting;
- ``full_N_wait_W``: all ``N`` connections busy and ``W`` requests waiting (the
  ``gateway_busy`` state).

The connections are stand-ins answering the pool's questions (idle, available, expired...) as
real HTTP/1.1 connections in those states do; no socket is opened, so what is timed is the
pool's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpcore
from httpcore._async.connection_pool import AsyncPoolRequest

from trunkline.bench.report import BenchResult, GoalSpec, Runs
from trunkline.gateway.connection_pool import ReclaimingConnectionPool

__all__ = ["POOLS", "run_pool_bench"]

POOLS = {"httpcore": httpcore.AsyncConnectionPool, "trunkline": ReclaimingConnectionPool}
"""The pools compared, the baseline first."""
MOST = 1000
"""Connections each pool may hold: the gateway's default ``MAX_CONNECTIONS``."""
ORIGIN = httpcore.Origin(b"http", b"engine", 8000)
GOAL_RATIO = 0.1


class _Connection:
    """A kept-alive HTTP/1.1 connection to the engine, idle or carrying a request."""

    def __init__(self, busy: bool) -> None:
        self.busy = busy

    def can_handle_request(self, origin: httpcore.Origin) -> bool:
        return origin == ORIGIN

    def is_available(self) -> bool:
        return not self.busy

    def is_idle(self) -> bool:
        return not self.busy

    def is_closed(self) -> bool:
        return False

    def has_expired(self) -> bool:
        return False

    def info(self) -> str:
        return "ACTIVE" if self.busy else "IDLE"


def _pool(kind: type[httpcore.AsyncConnectionPool], connections: int, waiting: int) -> Any:
    """A pool of ``kind`` holding ``connections`` (all busy when requests wait, else idle),
    with ``waiting`` requests queued behind them."""
    pool = kind(max_connections=MOST, max_keepalive_connections=MOST)
    busy = waiting > 0
    held: list[Any] = [_Connection(busy) for _ in range(connections)]
    requests = []
    if busy:  # each busy connection carries a request, then those waiting
        for connection in held:
            request = AsyncPoolRequest(httpcore.Request("POST", "http://engine:8000/v1"))
            request.connection = connection
            requests.append(request)
    url = "http://engine:8000/v1/chat/completions"
    requests += [AsyncPoolRequest(httpcore.Request("POST", url)) for _ in range(waiting)]
    pool._connections = held
    pool._requests = requests
    return pool


def _time_hand_outs(pool: Any, times: int) -> float:
    """Median thread-CPU seconds of one hand-out over ``times`` of them."""
    samples = []
    for _ in range(times):
        start = time.thread_time_ns()
        pool._assign_requests_to_connections()
        samples.append((time.thread_time_ns() - start) / 1e9)
    samples.sort()
    return samples[len(samples) // 2]


async def _measure(states: Sequence[tuple[str, int, int]], times: int, rounds: int) -> Runs:
    runs: Runs = {name: {} for name in POOLS}
    for label, connections, waiting in states:
        best: dict[str, list[float]] = {name: [] for name in POOLS}
        for _ in range(rounds):  # alternating, so a busy moment of the machine hits both
            for name, kind in POOLS.items():
                pool = _pool(kind, connections, waiting)
                best[name].append(_time_hand_outs(pool, times))
        for name, seconds in best.items():
            runs[name][f"{label}_ms"] = min(seconds) * 1000
    return runs


def pool_states(idle: Sequence[int], waiting: Sequence[int]) -> list[tuple[str, int, int]]:
    """The states timed: ``idle_N`` for each of ``idle``, and the full pool with each of
    ``waiting`` requests waiting."""
    states = [(f"idle_{n}", n, 0) for n in idle]
    states += [(f"full_{MOST}_wait_{w}", MOST, w) for w in waiting]
    return states


def run_pool_bench(
    out: Path,
    *,
    idle: Sequence[int] = (200, 500, 1000),
    waiting: Sequence[int] = (100, 500),
    times: int = 20,
    rounds: int = 3,
) -> BenchResult:
    """Time both pools' hand-outs in each state; write ``out/handout.png``; the result (its
    ``runs`` in ms per hand-out, the best round's median)."""
    if not idle or min(idle) < 1 or max(idle) > MOST or any(w < 1 for w in waiting):
        raise ValueError(f"idle connections go from 1 to {MOST}, waiting requests from 1")
    if times < 1 or rounds < 1:
        raise ValueError("--times and --rounds must be at least 1")
    states = pool_states(idle, waiting)
    runs = asyncio.run(_measure(states, times, rounds))
    largest = f"idle_{max(idle)}_ms"
    goal = GoalSpec(
        f"gateway pool hand-out / httpcore's, {max(idle)} idle connections",
        f"<= {GOAL_RATIO:g}",
        lambda measured: measured["trunkline"][largest] / measured["httpcore"][largest],
    )
    inputs = {
        "max_connections": MOST,
        "states": [label for label, _, _ in states],
        "times": times,
        "rounds": rounds,
        "httpcore": httpcore.__version__,
        "time": "thread CPU time of one hand-out: the median of --times, the best of --rounds",
    }
    result = BenchResult.build("pool", simulated=False, inputs=inputs, runs=runs, goals=[goal])
    _plot(runs, [label for label, _, _ in states], out / "handout.png")
    return result


def _plot(runs: Runs, labels: list[str], path: Path) -> None:
    """Grouped bars, one group per state, on a log axis of ms per hand-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    try:
        width = 0.8 / len(runs)
        for offset, (name, metrics) in enumerate(runs.items()):
            xs = [i + offset * width for i in range(len(labels))]
            ax.bar(xs, [metrics[f"{label}_ms"] for label in labels], width, label=name)
        ticks = [i + width * (len(runs) - 1) / 2 for i in range(len(labels))]
        ax.set_xticks(ticks, [label.replace("_", " ") for label in labels], rotation=15)
        ax.set_yscale("log")
        ax.set_ylabel("CPU ms per hand-out (log scale)")
        ax.set_title("connection hand-out: httpcore 1.0.9 vs the gateway's pool")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
