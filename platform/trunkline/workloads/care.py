"""``care``: customer-care chats — many short multi-turn conversations, one long policy preamble.

Every request starts with its tenant's preamble (the contact-centre policy), then the
conversation so far: each user turn and the assistant's previous answers, scripted so the
engine answers exactly what the next turn will quote (the prefix cache then reuses whole
conversations, as with a real model). Conversations start as a Poisson process; the next turn
comes ``think_s`` (exponential) after the previous one — open loop, so keep ``think_s`` well
above the response time.

The defaults (one tenant, a 1,500-token preamble) fit every replica's cache, so any routing
reaches most of the reuse. ``trunkline bench routing`` uses the multitenant shape of a MaaS —
``tenants_count=48,preamble_tokens=6000``: more preamble tokens than one replica's KV cache —
where a request lands decides whether its preamble is cached (docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trunkline.workloads.prompts import build_prompt, segment, stable_key
from trunkline.workloads.sampling import length, poisson_arrivals
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["CareWorkload"]


@dataclass(frozen=True, slots=True)
class CareWorkload:
    name: str = "care"
    seed: int = 1
    duration_s: float = 600.0
    rate: float = 4.0
    """New conversations per second."""
    tenants_count: int = 1
    """Tenants, each with its own preamble; conversations spread evenly."""
    preamble_tokens: int = 1500
    turns: float = 3.0
    """Mean user turns per conversation (geometric, at least one)."""
    user_tokens: float = 60.0
    answer_tokens: float = 120.0
    think_s: float = 10.0
    tier: str = "silver"

    @property
    def tenants(self) -> Mapping[str, str]:
        return {self._tenant(i): self.tier for i in range(self.tenants_count)}

    def _tenant(self, index: int) -> str:
        return f"care-{index}"

    def requests(self) -> Iterator[WorkloadRequest]:
        rng = random.Random(self.seed)
        schedule: list[tuple[float, int, int]] = []  # (arrival, conversation, turn)
        for conversation, start in enumerate(
            poisson_arrivals(rng, self.rate, 0.0, self.duration_s)
        ):
            at = start
            for turn in range(_geometric(rng, self.turns)):
                if turn:
                    at += rng.expovariate(1.0 / self.think_s)
                if at >= self.duration_s:
                    break
                schedule.append((at, conversation, turn))
        heapq.heapify(schedule)
        while schedule:
            at, conversation, turn = heapq.heappop(schedule)
            yield self._request(at, conversation, turn)

    def _request(self, at: float, conversation: int, turn: int) -> WorkloadRequest:
        tenant = conversation % self.tenants_count
        parts = [segment(stable_key("care-preamble", self.seed, tenant), self.preamble_tokens)]
        answer: list[int] = []
        for index in range(turn + 1):
            # Lengths are drawn from a per-turn RNG so every turn rebuilds the same history.
            turn_rng = random.Random(stable_key("care-turn", self.seed, conversation, index))
            user = length(turn_rng, self.user_tokens, high=4 * int(self.user_tokens) + 1)
            reply = length(turn_rng, self.answer_tokens, high=4 * int(self.answer_tokens) + 1)
            parts.append(segment(stable_key("care-user", self.seed, conversation, index), user))
            answer = segment(stable_key("care-answer", self.seed, conversation, index), reply)
            if index < turn:
                parts.append(answer)
        return WorkloadRequest(
            request_id=f"care-{conversation}-{turn}",
            arrival=at,
            tenant=self._tenant(tenant),
            prompt=build_prompt(parts),
            max_tokens=len(answer),
            output_tokens=answer,
        )


def _geometric(rng: random.Random, mean: float) -> int:
    """At least one; mean ``mean``."""
    if mean <= 1:
        return 1
    count = 1
    while rng.random() > 1.0 / mean:
        count += 1
    return count
