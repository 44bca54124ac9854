"""What the engine model reports: token events, per-request usage, counters and KV-cache events.

Plain data shared by the pure engine core (which produces it), the two drivers (wall-clock and
virtual time) and the metrics renderer (which consume it). The KV-cache events mirror vLLM's
``vllm.distributed.kv_events`` (``BlockStored``, ``BlockRemoved``, ``AllBlocksCleared``) field for
field, so a publisher can put them on the wire in vLLM's format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AllBlocksCleared",
    "BlockRemoved",
    "BlockStored",
    "DecodeRun",
    "EngineCounters",
    "FinishReason",
    "KVCacheEvent",
    "KVEventSink",
    "RequestUsage",
    "StepResult",
    "TokenEvent",
]

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """Token counts and latencies of a finished request (engine time, seconds)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    e2e_latency: float
    num_preemptions: int
    ttft: float = 0.0
    engine_ttft: float = 0.0
    """From when the scheduler took the request in to its first token: vLLM's queue plus prefill
    time. Less than ``ttft`` by the API server's delay and the rest of the step the engine was
    running when the request arrived."""


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
    queue_s: float = 0.0
    """First token only: time from when the scheduler took the request in (the first step after
    its arrival) until first scheduled (vLLM's queue time)."""
    prefill_s: float = 0.0
    """First token only: time from first scheduled to this token (vLLM's prefill time)."""

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


@dataclass(frozen=True, slots=True)
class DecodeRun:
    """Several pure-decode steps run at once, starting at ``time`` (virtual time only).

    Every step decodes one token for each of the same ``num_seqs`` requests, so step ``i``
    gives each of them one token ``durations[i]`` after its previous one; ``finished`` holds the
    last events of the requests that end in the last step, in batch order.
    """

    time: float
    durations: list[float]
    num_seqs: int
    finished: tuple[TokenEvent, ...]
    end: float

    @property
    def num_steps(self) -> int:
        return len(self.durations)


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


@dataclass(frozen=True, slots=True)
class BlockStored:
    """Full blocks that became cached, in chain order; ``parent_block_hash`` precedes the first."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    """Cached blocks that were evicted (their physical blocks reused)."""

    block_hashes: tuple[int, ...]
    medium: str | None = "GPU"


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    """The whole prefix cache was reset."""


KVCacheEvent = BlockStored | BlockRemoved | AllBlocksCleared
KVEventSink = Callable[[float, Sequence[KVCacheEvent]], None]
"""Receives the KV-cache events of one step with the engine time the step ended."""
