"""Accelerator profiles: the step-time and capacity numbers the engine simulator runs on.

A profile describes one vLLM replica serving an 8B-class model (Llama-3-8B shape: 32 layers,
8 KV heads of 128 dims, bf16 — 128 KiB of KV cache per token) on one accelerator. The presets are
rough first guesses from public specs and published vLLM numbers; they are meant to be replaced
by numbers calibrated against real vLLM, which is why they live in one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from trunkline.errors import ConfigurationError

__all__ = ["PRESETS", "AcceleratorProfile", "UnknownProfileError", "get_profile"]


@dataclass(frozen=True, slots=True)
class AcceleratorProfile:
    """Step-time model and capacity of one engine replica.

    One scheduler step lasts
    ``prefill_tokens * prefill_s_per_token + decode_step_base_s + decode_s_per_seq * seqs``
    where ``seqs`` is the number of sequences in the batch.
    """

    name: str
    prefill_s_per_token: float
    decode_step_base_s: float
    decode_s_per_seq: float
    kv_cache_blocks: int
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    block_size: int = 16

    def __post_init__(self) -> None:
        for field_name in ("prefill_s_per_token", "decode_step_base_s", "decode_s_per_seq"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"{field_name} must be >= 0")
        for field_name in (
            "kv_cache_blocks",
            "max_num_seqs",
            "max_model_len",
            "max_num_batched_tokens",
            "block_size",
        ):
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


PRESETS: dict[str, AcceleratorProfile] = {
    # H100 SXM 80 GB, 3.35 TB/s: 16 GB of weights read per decode step ≈ 5 ms; ~15k prefill tok/s;
    # ~50 GB left for KV at gpu_memory_utilization 0.9.
    "h100": AcceleratorProfile(
        name="h100",
        prefill_s_per_token=6.5e-5,
        decode_step_base_s=6.5e-3,
        decode_s_per_seq=6e-5,
        kv_cache_blocks=24_000,
        max_num_seqs=256,
        max_model_len=8192,
        max_num_batched_tokens=8192,
    ),
    # A100 SXM 80 GB, 2.0 TB/s: ≈ 8 ms weight read per step; ~7k prefill tok/s; same KV room.
    "a100": AcceleratorProfile(
        name="a100",
        prefill_s_per_token=1.4e-4,
        decode_step_base_s=9.5e-3,
        decode_s_per_seq=1e-4,
        kv_cache_blocks=24_000,
        max_num_seqs=256,
        max_model_len=8192,
        max_num_batched_tokens=4096,
    ),
    # L40S 48 GB GDDR6, 864 GB/s: ≈ 19 ms weight read per step; ~3.5k prefill tok/s; ~23 GB KV.
    "l40s": AcceleratorProfile(
        name="l40s",
        prefill_s_per_token=2.8e-4,
        decode_step_base_s=2.2e-2,
        decode_s_per_seq=2e-4,
        kv_cache_blocks=11_000,
        max_num_seqs=128,
        max_model_len=8192,
        max_num_batched_tokens=2048,
    ),
    # Xeon 6 / Sapphire Rapids with AMX (vLLM CPU backend): ~300 prefill tok/s, ~12 tok/s per
    # stream; VLLM_CPU_KVCACHE_SPACE=40 GiB; vLLM on CPU wants block sizes in multiples of 32.
    "xeon": AcceleratorProfile(
        name="xeon",
        prefill_s_per_token=3.3e-3,
        decode_step_base_s=8e-2,
        decode_s_per_seq=1.5e-3,
        kv_cache_blocks=2560,
        block_size=128,
        max_num_seqs=32,
        max_model_len=8192,
        max_num_batched_tokens=2048,
    ),
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
