"""What a routing policy sees: a plain view of the request and one of each endpoint.

Views are built by whoever calls the policy — the gateway from its snapshot and the engines'
``/metrics``, the fleet simulator from its simulated engines — so the policy code is the same in
both and never touches I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["EndpointLoad", "EndpointView", "PromptRange", "PromptView", "RequestView"]


class PromptView(Protocol):
    """A prompt as token ids, hashed into an engine's blocks on demand (and cached)."""

    @property
    def num_tokens(self) -> int: ...

    def block_hashes(self, block_size: int) -> Sequence[int]:
        """Chained hashes of the prompt's full blocks, as the engine computes them."""
        ...


@dataclass(frozen=True, slots=True)
class PromptRange:
    """Prompt lengths from ``min_tokens`` up to, not including, ``max_tokens`` (None: no limit)."""

    min_tokens: int = 0
    max_tokens: int | None = None

    def __contains__(self, tokens: object) -> bool:
        return (
            isinstance(tokens, int)
            and tokens >= self.min_tokens
            and (self.max_tokens is None or tokens < self.max_tokens)
        )


@dataclass(frozen=True, slots=True)
class RequestView:
    request_id: str
    tenant: str
    tier: str
    alias: str
    prompt_tokens: int = 0
    """Prompt length, or the gateway's estimate of it when it has no tokenizer."""
    max_tokens: int | None = None
    prompt: PromptView | None = None
    """Token-level view of the prompt when the caller has one (the simulator always does)."""
    cache_salt: str | None = None
    regions: tuple[str, ...] = ()
    """Data residency: the regions the tenant's requests may run in (empty: anywhere)."""
    may_use_burst: bool = True
    """Whether the request's tier may use burst pools (the ``tier-pools`` filter)."""
    model: str | None = None
    """The model the alias resolves to, for the ``model`` filter (None: not checked)."""

    @property
    def num_prompt_tokens(self) -> int:
        """The prompt's tokens when the token-level view is there, else the estimate."""
        return self.prompt.num_tokens if self.prompt is not None else self.prompt_tokens


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """Load signals of one endpoint, named after vLLM's gauges."""

    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    """Fraction of the engine's KV-cache blocks in use, 0..1."""
    queued_prompt_tokens: float = 0.0
    """Prompt tokens sent to the engine whose first token has not come back yet, less those its
    prefix cache likely holds (the prefill ahead)."""
    unaccounted_waiting: float | None = None
    """Requests the engine reported waiting that the gateway's own accounting does not explain
    (another gateway's, say): their prompts are not in ``queued_prompt_tokens``. A lower bound
    (any request of ours the scrape may have counted is taken off). None: no accounting, so any
    request waiting beyond ``queued_prompt_tokens`` may be unknown."""
    prefill_tokens_per_s: float = 0.0
    """Measured prefill service rate of the engine; 0 when not measured yet."""
    decode_step_s: float = 0.0
    """Measured mean time between output tokens (ITL); 0 when not measured yet."""
    age_s: float = 0.0
    """How old these figures are (time since the scrape they come from)."""
    kv_capacity_tokens: int | None = None
    """Tokens the engine's KV cache holds as the engine reports it (vLLM's
    ``cache_config_info``); None when not reported. Fills ``EndpointView.kv_capacity_tokens``."""


@dataclass(frozen=True, slots=True)
class EndpointView:
    key: str
    """The endpoint's id: unique among the endpoints of one decision."""
    pool: str
    region: str
    accelerator: str
    block_size: int
    load: EndpointLoad = EndpointLoad()
    cost_per_hour: float | None = None
    """Price of one replica per hour (the pool's, else its flavor's)."""
    tokens_per_s: float | None = None
    """Nominal output tokens/s of one replica, for cost per token; None when unknown."""
    healthy: bool = True
    """False while the endpoint is ejected (failed health checks or consecutive errors)."""
    burst: bool = False
    model: str | None = None
    """The model the endpoint serves (None: unknown, not filtered on)."""
    kv_capacity_tokens: int | None = None
    """Tokens one replica's prefix cache holds (None: unknown); sizes the approximate prefix
    index per endpoint."""
    prompt_tokens: PromptRange | None = None
    """The prompt lengths the endpoint's pool is placed for (None: any), for the
    ``prompt-length`` filter."""
    tiers: tuple[str, ...] | None = None
    """The only tiers the endpoint's pool serves (None: every tier), for the ``tier-pools``
    filter."""
    max_num_batched_tokens: int | None = None
    """The engine's vLLM ``--max-num-batched-tokens`` (None: its flavor's default), for TTFT
    prediction."""

    def placed_for(self, request: RequestView) -> bool:
        """Whether the endpoint's pool is placed for the request's prompt length."""
        return self.prompt_tokens is None or request.num_prompt_tokens in self.prompt_tokens
