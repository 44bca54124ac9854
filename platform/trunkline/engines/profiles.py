"""Engine profiles: the step-time model, KV capacity and scheduler limits one replica runs on.

One scheduler step runs one forward pass over every scheduled token, so it lasts::

    step_overhead_s
    + hypot(weights_read_s, num_tokens * linear_s_per_token)   # linear layers: a smooth roofline
    + per_seq_s * num_seqs                                       # LM head and sampling per sequence
    + prefill_attention_s_per_pair * prefill_pairs              # causal attention of prefill chunks
    + attention_s_per_context_token * decode_context_tokens     # decode attention reads the KV

The linear term is memory-bound (the weights stream once) for small batches and compute-bound
for large ones; ``hypot`` joins the two asymptotes and follows Vidur's measured kernel times to a
median error of 3-5 % (see :mod:`trunkline.engines.vidur`). The presets are derived in
:func:`derive_profile` from :mod:`trunkline.engines.hardware`, where every figure cites its source.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from trunkline.engines.hardware import ACCELERATORS, GIB, LLAMA_3_8B, Accelerator, ModelShape
from trunkline.errors import ConfigurationError

__all__ = [
    "PRESETS",
    "STEP_COSTS",
    "AcceleratorProfile",
    "UnknownProfileError",
    "derive_profile",
    "get_profile",
]

STEP_COSTS = (
    "step_overhead_s",
    "weights_read_s",
    "linear_s_per_token",
    "per_seq_s",
    "prefill_attention_s_per_pair",
    "attention_s_per_context_token",
)
"""Every term of a step's duration; the API server's delay is not a step."""
_COSTS = ("frontend_latency_s", *STEP_COSTS)
_LIMITS = (
    "kv_cache_blocks",
    "max_num_seqs",
    "max_model_len",
    "max_num_batched_tokens",
    "block_size",
)


@dataclass(frozen=True, slots=True)
class AcceleratorProfile:
    """Step-time model, capacity and limits of one engine replica (see the module docstring)."""

    name: str
    step_overhead_s: float
    weights_read_s: float
    linear_s_per_token: float
    per_seq_s: float
    prefill_attention_s_per_pair: float
    attention_s_per_context_token: float
    kv_cache_blocks: int
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    block_size: int = 16
    model: str = "llama-3-8b"
    frontend_latency_s: float = 0.0
    """API server time between a client's request and the engine core seeing it (virtual time
    only: the simulated HTTP server has its own). Not modelled for the presets; calibrated."""

    def __post_init__(self) -> None:
        for field_name in _COSTS:
            if getattr(self, field_name) < 0:
                raise ValueError(f"{field_name} must be >= 0")
        for field_name in _LIMITS:
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be >= 1")
        if self.kv_cache_tokens < self.max_model_len:
            # vLLM refuses to start when one maximal request cannot fit in the KV cache.
            raise ValueError(
                f"KV cache holds {self.kv_cache_tokens} tokens, "
                f"less than max_model_len {self.max_model_len}"
            )

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens the KV cache can hold."""
        return self.kv_cache_blocks * self.block_size

    def batch_cost(self, num_tokens: int, num_seqs: int, prefill_pairs: int) -> float:
        """Seconds of a step, except the decode attention term (which grows every step)."""
        return (
            self.step_overhead_s
            + math.hypot(self.weights_read_s, num_tokens * self.linear_s_per_token)
            + self.per_seq_s * num_seqs
            + self.prefill_attention_s_per_pair * prefill_pairs
        )

    def step_time(
        self, num_tokens: int, num_seqs: int, prefill_pairs: int, decode_context_tokens: int
    ) -> float:
        """Seconds one step lasts; every driver computes durations through this expression."""
        cost = self.batch_cost(num_tokens, num_seqs, prefill_pairs)
        return cost + self.attention_s_per_context_token * decode_context_tokens

    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens per second in full prefill steps: chunks of ~1k-token prompts, their
        causal attention pairs included."""
        budget = self.max_num_batched_tokens
        return budget / self.step_time(budget, max(budget // 1024, 1), budget * 512, 0)


def derive_profile(
    accelerator: Accelerator,
    model: ModelShape = LLAMA_3_8B,
    *,
    tensor_parallel: int = 1,
    max_model_len: int | None = None,
    name: str | None = None,
) -> AcceleratorProfile:
    """The profile of ``model`` served by vLLM on ``tensor_parallel`` x ``accelerator``.

    Tensor parallelism divides weights, bandwidth-bound and compute-bound work evenly; the
    all-reduces it adds are not modelled, so TP > 1 is optimistic.
    """
    if tensor_parallel < 1:
        raise ValueError("tensor_parallel must be >= 1")
    bandwidth = accelerator.bandwidth_bytes_s * accelerator.mbu * tensor_parallel
    compute = accelerator.bf16_flops * accelerator.mfu * tensor_parallel
    if accelerator.kv_cache_gib is not None:
        kv_bytes = accelerator.kv_cache_gib * GIB
    else:
        usable = accelerator.memory_gib * accelerator.gpu_memory_utilization
        kv_bytes = (usable - accelerator.reserved_gib) * GIB * tensor_parallel - model.weight_bytes
    block_bytes = model.kv_bytes_per_token * accelerator.block_size
    kv_blocks = int(kv_bytes // block_bytes) if kv_bytes > 0 else 0
    context = max_model_len or model.max_model_len
    if kv_blocks * accelerator.block_size < context:
        raise ConfigurationError(
            f"{model.name} on {tensor_parallel} x {accelerator.name} leaves room for "
            f"{max(kv_blocks, 0) * accelerator.block_size} KV tokens, less than one "
            f"{context}-token request; use more tensor parallelism or a shorter max_model_len",
            param="profile",
        )
    return AcceleratorProfile(
        name=name or accelerator.name,
        step_overhead_s=accelerator.step_overhead_s,
        weights_read_s=model.streamed_weight_bytes / bandwidth,
        linear_s_per_token=2 * model.linear_params / compute,
        per_seq_s=2 * model.lm_head_params / compute,
        prefill_attention_s_per_pair=model.attention_flops_per_pair / compute,
        attention_s_per_context_token=model.kv_bytes_per_token / bandwidth,
        kv_cache_blocks=kv_blocks,
        max_num_seqs=accelerator.max_num_seqs,
        max_model_len=context,
        max_num_batched_tokens=accelerator.max_num_batched_tokens,
        block_size=accelerator.block_size,
        model=model.name,
    )


# Pure arithmetic over the constant tables: one Llama-3-8B profile per accelerator.
PRESETS: dict[str, AcceleratorProfile] = {
    name: derive_profile(accelerator) for name, accelerator in ACCELERATORS.items()
}


class UnknownProfileError(ConfigurationError):
    """No preset has the requested name."""


def get_profile(name: str) -> AcceleratorProfile:
    """Return the preset called ``name`` (case-insensitive)."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise UnknownProfileError(
            f"unknown accelerator profile {name!r}; known profiles: {known}", param="profile"
        ) from None


@functools.lru_cache(maxsize=64)
def nominal_prefill_tokens_per_s(accelerator: str) -> float | None:
    """:meth:`AcceleratorProfile.prefill_tokens_per_s` of the preset ``accelerator`` (None when
    there is no such preset); presets do not change, so each is worked out once."""
    try:
        return get_profile(accelerator).prefill_tokens_per_s()
    except ConfigurationError:
        return None
