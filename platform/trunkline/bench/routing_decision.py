"""Routing decision time: ``prefix-aware`` against ``round-robin`` on the same requests.

:func:`run_decision_bench` builds ``endpoints`` endpoint views with random loads, teaches the
``prefix-aware`` policy ``cached_prefixes`` prompts (its approximate index then holds their
blocks), and times one decision — ``rank`` then ``routed``, as the gateway calls them, on a
fresh :class:`~trunkline.gateway.routing.TextPrompt` so the text hashing is included — for
each of ``requests`` requests that reuse a random cached prefix with a new question. Both
policies see the same requests, interleaved in blocks so machine noise hits both alike.

Each decision is timed twice: on the thread's CPU clock (``decision_*``, what the goal reads)
and on the wall clock (``wall_*``). On a shared machine the wall clock also counts the
scheduler's time slices given to other processes (multiples of ~4 ms landing on a few percent
of decisions when the cores are busy), which says nothing about the policy's cost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from trunkline.bench.report import BenchResult, GoalSpec, Runs
from trunkline.bench.stats import latency_summary_ms
from trunkline.bench.timing import block_schedule
from trunkline.gateway.routing import (
    EndpointLoad,
    EndpointView,
    RequestView,
    RoutingPolicy,
    TextPrompt,
    make_policy,
)

__all__ = ["run_decision_bench"]

POLICIES = ("round-robin", "prefix-aware")
GOAL_P99_MS = 1.0


def _endpoints(count: int, rng: random.Random) -> list[EndpointView]:
    return [
        EndpointView(
            f"pool-{i % 2}/{i}",
            f"pool-{i % 2}",
            "eu-west",
            "h100",
            16,
            EndpointLoad(float(rng.randrange(0, 30)), float(rng.randrange(0, 5)), rng.random()),
            cost_per_hour=3.0,
            tokens_per_s=2500.0,
        )
        for i in range(count)
    ]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(f"w{rng.randrange(100_000)}" for _ in range(words))


def _request(index: int, prefix: str, question: str) -> RequestView:
    prompt = TextPrompt(prefix + question)
    return RequestView(
        f"req-{index}", "tenant", "silver", "chat", prompt_tokens=prompt.num_tokens, prompt=prompt
    )


def _time_decisions(
    policy: RoutingPolicy, endpoints: Sequence[EndpointView], requests: Sequence[RequestView]
) -> tuple[list[float], list[float]]:
    """CPU and wall seconds of ``rank`` + ``routed`` for each request."""
    cpu_clock, wall_clock = time.thread_time_ns, time.perf_counter_ns
    cpu, wall = [], []
    for request in requests:
        wall_start, cpu_start = wall_clock(), cpu_clock()
        ranking = policy.rank(request, endpoints)
        policy.routed(request, endpoints[ranking[0]])
        cpu_end, wall_end = cpu_clock(), wall_clock()
        cpu.append((cpu_end - cpu_start) / 1e9)
        wall.append((wall_end - wall_start) / 1e9)
    return cpu, wall


def run_decision_bench(
    endpoints: int = 16,
    cached_prefixes: int = 10_000,
    requests: int = 2_000,
    seed: int = 1,
    *,
    prefix_words: int = 300,
    block: int = 100,
) -> dict[str, Any]:
    """Per-decision time of ``prefix-aware`` and ``round-robin``; a ``result.json``-shaped dict
    (``runs`` per policy in ms: p50, p90, p99, mean; ``ratios``; the p99 goal)."""
    if endpoints < 1 or cached_prefixes < 1 or requests < 2:
        raise ValueError("need at least 1 endpoint, 1 cached prefix and 2 requests")
    rng = random.Random(seed)
    views = _endpoints(endpoints, rng)
    prefixes = [_text(rng, prefix_words) + f" [{i}]" for i in range(cached_prefixes)]
    policies = {name: make_policy(name) for name in POLICIES}
    for index, prefix in enumerate(prefixes):  # warm up: every prefix routed once, untimed
        request = _request(index, prefix, "")
        for policy in policies.values():
            policy.routed(request, views[policy.rank(request, views)[0]])
    # The same requests for both policies, built before timing (the prompt's hashes are not).
    specs = [(rng.choice(prefixes), " " + _text(rng, 20)) for _ in range(requests)]
    streams = {name: [_request(i, p, q) for i, (p, q) in enumerate(specs)] for name in policies}
    cpu: dict[str, list[float]] = {name: [] for name in policies}
    wall: dict[str, list[float]] = {name: [] for name in policies}
    done = dict.fromkeys(policies, 0)
    for name, size in block_schedule(list(policies), requests, block):
        batch = streams[name][done[name] : done[name] + size]
        done[name] += size
        cpu_s, wall_s = _time_decisions(policies[name], views, batch)
        cpu[name] += cpu_s
        wall[name] += wall_s
    runs: Runs = {}
    for name in POLICIES:
        runs[name] = {
            **{f"decision_{k}": v for k, v in latency_summary_ms(cpu[name]).items()},
            **{f"wall_{k}": v for k, v in latency_summary_ms(wall[name]).items()},
        }
    goal = GoalSpec(
        f"prefix-aware decision time p99 (ms), {endpoints} endpoints, "
        f"{cached_prefixes} cached prefixes",
        f"<= {GOAL_P99_MS:g}",
        lambda measured: measured["prefix-aware"]["decision_p99_ms"],
    )
    inputs = {
        "endpoints": endpoints,
        "cached_prefixes": cached_prefixes,
        "requests": requests,
        "seed": seed,
        "prefix_words": prefix_words,
        "prompt": "TextPrompt (text hashed per decision, as in the gateway)",
        "time": "decision_*: thread CPU time, wall_*: wall clock, of the policy code here",
    }
    result = BenchResult.build(
        "routing-decision", simulated=False, inputs=inputs, runs=runs, goals=[goal]
    )
    return result.to_json()
