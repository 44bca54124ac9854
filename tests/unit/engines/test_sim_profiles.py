"""Accelerator presets, their derivation from hardware figures, and their lookup."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from tests.unit.engines.helpers import TINY

from trunkline.engines import (
    ACCELERATORS,
    MODELS,
    PRESETS,
    UnknownProfileError,
    derive_profile,
    get_profile,
)
from trunkline.errors import ConfigurationError

NAMES = ["h100", "h200", "a100", "l40s", "gaudi3", "xeon"]


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_is_found_by_name_in_any_case(name: str) -> None:
    assert get_profile(name).name == name
    assert get_profile(name.upper()) is get_profile(name)


def test_an_unknown_profile_is_a_configuration_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError, match="h100") as caught:
        get_profile("tpu-v9")
    assert isinstance(caught.value, ConfigurationError)
    assert "tpu-v9" in str(caught.value)


def decode_step(name: str, batch: int = 1, context: int = 1000) -> float:
    return PRESETS[name].step_time(batch, batch, 0, batch * context)


def prefill_step(name: str, tokens: int = 2048) -> float:
    return PRESETS[name].step_time(tokens, 1, tokens * (tokens + 1) // 2, 0)


def test_more_memory_bandwidth_gives_faster_decode_steps() -> None:
    order = ["h200", "h100", "a100", "l40s", "xeon"]  # 4.8, 3.35, 2.0, 0.86, 0.61 TB/s
    for faster, slower in itertools.pairwise(order):
        assert decode_step(faster) < decode_step(slower)


def test_more_compute_gives_faster_prefill() -> None:
    order = ["gaudi3", "h100", "a100", "xeon"]  # 1835, 989, 312, 262 (x efficiency) TFLOPS
    for faster, slower in itertools.pairwise(order):
        assert prefill_step(faster) < prefill_step(slower)


def test_a_decode_step_costs_little_more_per_extra_sequence_until_compute_bound() -> None:
    one, eight = decode_step("h100", 1), decode_step("h100", 8, context=1)
    assert eight < 1.1 * one  # memory-bound: the weights are read once for the whole batch
    assert prefill_step("h100", 8192) > 20 * one  # compute-bound


def test_h100_llama_3_8b_lands_on_published_orders_of_magnitude() -> None:
    h100 = PRESETS["h100"]
    # ~6-9 ms per output token alone; prefill of the order of 40k tokens/s; 400-500k KV tokens.
    assert 0.005 < decode_step("h100") < 0.010
    assert 25_000 < 8192 / prefill_step("h100", 8192) < 60_000
    assert 400_000 < h100.kv_cache_tokens < 500_000
    assert (h100.max_num_seqs, h100.max_num_batched_tokens) == (1024, 8192)


def test_kv_capacity_is_memory_left_after_the_weights() -> None:
    h100 = ACCELERATORS["h100"]
    small = derive_profile(h100, MODELS["llama-3.2-1b"])
    assert small.kv_cache_tokens > PRESETS["h100"].kv_cache_tokens
    big_memory = derive_profile(replace(h100, memory_gib=160))
    assert big_memory.kv_cache_tokens > 2 * PRESETS["h100"].kv_cache_tokens


def test_a_larger_model_is_slower_and_needs_tensor_parallelism_to_fit() -> None:
    with pytest.raises(ConfigurationError, match="tensor parallelism"):
        derive_profile(ACCELERATORS["h100"], MODELS["llama-3-70b"])
    big = derive_profile(ACCELERATORS["h100"], MODELS["llama-3-70b"], tensor_parallel=4)
    eight_b = PRESETS["h100"]
    assert big.linear_s_per_token > eight_b.linear_s_per_token  # 70B over 4 GPUs: 2.2x work each
    assert big.model == "llama-3-70b"


def test_the_cpu_profile_uses_vllm_cpu_block_size_and_fixed_kv_space() -> None:
    xeon = PRESETS["xeon"]
    assert xeon.block_size % 32 == 0
    assert xeon.kv_cache_tokens * MODELS["llama-3-8b"].kv_bytes_per_token == 40 * 2**30


def test_a_profile_whose_kv_cache_cannot_hold_one_full_request_is_refused() -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        replace(TINY, kv_cache_blocks=2, block_size=16, max_model_len=64)


def test_negative_costs_are_refused() -> None:
    with pytest.raises(ValueError, match="linear_s_per_token"):
        replace(TINY, linear_s_per_token=-1.0)
