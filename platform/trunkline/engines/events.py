"""What one engine step reports: token events, per-request usage and running counters.

Plain data shared by the pure engine core (which produces it), the wall-clock driver and the
metrics renderer (which consume it), and later the virtual-time fleet simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["EngineCounters", "FinishReason", "RequestUsage", "StepResult", "TokenEvent"]

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """Token counts and latency of a finished request (engine time, seconds)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    e2e_latency: float
    num_preemptions: int


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """One generated token.

    ``latency`` is the time since arrival for the first token (TTFT) and since the previous
    token otherwise (inter-token latency). The request's last event carries ``finish_reason``
    and ``usage``.
    """

    req_id: str
    token_id: int
    index: int
    time: float
    latency: float
    finish_reason: FinishReason | None = None
    usage: RequestUsage | None = None

    @property
    def first(self) -> bool:
        return self.index == 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class StepResult:
    """Outcome of one continuous-batching step that started at ``time``."""

    time: float
    duration: float
    events: tuple[TokenEvent, ...] = ()
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    num_scheduled_seqs: int = 0
    preempted: tuple[str, ...] = ()

    @property
    def idle(self) -> bool:
        return self.num_scheduled_seqs == 0

    @property
    def num_scheduled_tokens(self) -> int:
        return self.num_prefill_tokens + self.num_decode_seqs


@dataclass(slots=True)
class EngineCounters:
    """Monotonic totals since the engine started, named after vLLM's counters."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions: int = 0
    finished: dict[FinishReason, int] = field(
        default_factory=lambda: {"stop": 0, "length": 0, "abort": 0}
    )
