"""Accelerator presets and their lookup."""

from __future__ import annotations

import itertools

import pytest

from trunkline.engines import PRESETS, AcceleratorProfile, UnknownProfileError, get_profile
from trunkline.errors import ConfigurationError


@pytest.mark.parametrize("name", ["h100", "a100", "l40s", "xeon"])
def test_every_preset_is_found_by_name_in_any_case(name: str) -> None:
    assert get_profile(name).name == name
    assert get_profile(name.upper()) is get_profile(name)


def test_an_unknown_profile_is_a_configuration_error_naming_the_known_ones() -> None:
    with pytest.raises(UnknownProfileError, match="h100") as caught:
        get_profile("tpu-v9")
    assert isinstance(caught.value, ConfigurationError)
    assert "tpu-v9" in str(caught.value)


def test_faster_accelerators_have_cheaper_steps() -> None:
    order = [PRESETS[name] for name in ("h100", "a100", "l40s", "xeon")]
    for faster, slower in itertools.pairwise(order):
        assert faster.prefill_s_per_token < slower.prefill_s_per_token
        assert faster.decode_step_base_s < slower.decode_step_base_s


def test_a_profile_whose_kv_cache_cannot_hold_one_full_request_is_refused() -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        AcceleratorProfile(
            name="tiny",
            prefill_s_per_token=0.001,
            decode_step_base_s=0.01,
            decode_s_per_seq=0.001,
            kv_cache_blocks=2,
            block_size=16,
            max_num_seqs=4,
            max_model_len=64,
            max_num_batched_tokens=64,
        )
