"""Prefix affinity under concurrent clients, over a real gateway (default settings: the
``prefix-aware`` policy, SLO admission on) and two simulated engines on loopback: requests that
share a preamble go back to the replica that has it cached, where round-robin spreads them.

The request shape is the real-vLLM routing benchmark's (``bench/_routing_real.py``): a chat with
a shared preamble as the system message and a short question of its own. Run with ``-s`` to see
the figures (reported; asserted against round-robin's).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Literal

import httpx
from tests.integration.test_engine_state_over_simulated_engines import (
    Live,
    start_fleet,
    start_gateway,
)

CLIENTS = 8
PREAMBLES = 16
REQUESTS = 96
WORDS = [
    "network", "billing", "roaming", "tariff", "invoice", "contract", "refund", "outage",
    "router", "modem", "fibre", "signal", "antenna", "upgrade", "plan", "data", "voice",
    "message", "account", "payment", "support",
]  # fmt: skip


def _words(seed: int, count: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(count))


@dataclass
class Run:
    stickiness: float
    """Share of requests sent to the endpoint most of their preamble's requests went to."""
    cached_share: float
    """Cached prompt tokens over prompt tokens, as the engines reported them."""


async def _run(policy: str, admission: Literal["slo", "off"] = "slo") -> Run:
    fleet = await start_fleet(2)
    live, server, task = await start_gateway(fleet, policy, admission)
    try:
        jobs = [(random.Random(number).randrange(PREAMBLES), number) for number in range(REQUESTS)]
        preamble_of: dict[str, int] = {}
        queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        async with httpx.AsyncClient(base_url=live.base_url, timeout=60.0) as http:
            await asyncio.gather(*(_client(live, http, queue, preamble_of) for _ in range(CLIENTS)))
        records = [record for _id, record in live.usage.read(10_000)]
    finally:
        server.should_exit = True
        await task
        await fleet.stop()
    assert len(records) == REQUESTS and all(r.status == 200 for r in records)
    endpoints: dict[int, list[str | None]] = defaultdict(list)
    for record in records:
        endpoints[preamble_of[record.request_id]].append(record.endpoint)
    kept = sum(Counter(sent).most_common(1)[0][1] for sent in endpoints.values())
    prompt = sum(r.prompt_tokens for r in records)
    return Run(kept / len(records), sum(r.cached_tokens for r in records) / prompt)


async def _client(
    live: Live,
    http: httpx.AsyncClient,
    queue: asyncio.Queue[tuple[int, int]],
    preamble_of: dict[str, int],
) -> None:
    while not queue.empty():
        preamble, number = queue.get_nowait()
        body = {
            "model": "llama",
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": _words(preamble, 300)},
                {"role": "user", "content": _words(10_000 + number, 20)},
            ],
        }
        response = await http.post("/chat/completions", json=body, headers=live.headers)
        assert response.status_code == 200, response.text
        preamble_of[response.headers["x-request-id"]] = preamble


async def test_concurrent_requests_sharing_a_preamble_stick_to_one_replica() -> None:
    round_robin = await _run("round-robin", admission="off")
    prefix_aware = await _run("prefix-aware", admission="off")
    with_admission = await _run("prefix-aware")
    ratio = prefix_aware.cached_share / round_robin.cached_share
    print(
        f"\n{CLIENTS} clients, {REQUESTS} requests over {PREAMBLES} preambles, 2 engines: "
        f"stickiness round-robin {round_robin.stickiness:.3f} vs prefix-aware "
        f"{prefix_aware.stickiness:.3f} ({with_admission.stickiness:.3f} with SLO admission); "
        f"cached share {round_robin.cached_share:.3f} vs {prefix_aware.cached_share:.3f} "
        f"({ratio:.2f}x; {with_admission.cached_share:.3f} with SLO admission)"
    )
    # Every preamble's first request is routed before anything is known of it, so 90 %, not
    # all. SLO admission keeps them too: the requests queued on a preamble's replica count only
    # the tokens it does not cache, so it is not predicted slower than an empty one (before
    # that, 77-90 % stayed; docs/admission.md).
    for run in (prefix_aware, with_admission):
        assert run.stickiness >= 0.9
        assert run.cached_share > round_robin.cached_share
