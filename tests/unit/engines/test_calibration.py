"""Fitting a profile's step-time model to measurements recovers the model that produced them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from tests.unit.engines.helpers import tiny_profile

from trunkline.engines import AcceleratorProfile
from trunkline.engines.calibration import (
    CalibrationPoints,
    fit_profile,
    nelder_mead,
    nonnegative_least_squares,
    refine_profile,
)

TRUE = tiny_profile(
    step_overhead_s=0.004,
    linear_s_per_token=2e-5,
    per_seq_s=3e-4,
    prefill_attention_s_per_pair=4e-9,
    frontend_latency_s=0.006,
    max_model_len=4096,
    kv_cache_blocks=2048,
    max_num_batched_tokens=4096,
)


def points() -> CalibrationPoints:
    prefill = [
        (p, TRUE.frontend_latency_s + TRUE.step_time(p, 1, p * (p + 1) // 2, 0))
        for p in (16, 256, 1024, 2048)
    ]
    decode = [(b, TRUE.step_time(b, b, 0, 0)) for b in (1, 4, 16, 32)]
    return CalibrationPoints(prefill, decode)


def test_the_fit_recovers_the_model_that_made_the_points() -> None:
    fitted = fit_profile(
        tiny_profile(max_model_len=4096, kv_cache_blocks=2048), points(), name="fit"
    )
    assert fitted.name == "fit"
    for field in (
        "step_overhead_s",
        "linear_s_per_token",
        "per_seq_s",
        "prefill_attention_s_per_pair",
        "frontend_latency_s",
    ):
        assert getattr(fitted, field) == pytest.approx(getattr(TRUE, field), rel=1e-6), field
    assert fitted.kv_cache_blocks == 2048  # capacity and limits come from the base


def test_coefficients_never_go_negative() -> None:
    # y = 3 - x/2 wants a negative slope: the fit drops it and keeps the mean as the constant.
    rows = [[1.0, float(x)] for x in range(5)]
    targets = [3.0 - x / 2 for x in range(5)]
    assert nonnegative_least_squares(rows, targets) == pytest.approx([2.0, 0.0])


def test_too_few_points_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        fit_profile(TRUE, CalibrationPoints([(16, 0.01)], [(1, 0.004)]), name="x")


def test_nelder_mead_finds_the_minimum_of_a_bowl() -> None:
    best = nelder_mead(lambda p: (p[0] - 1.5) ** 2 + 3 * (p[1] + 0.5) ** 2, [0.0, 0.0])
    assert best == pytest.approx([1.5, -0.5], abs=1e-3)


def test_refining_moves_the_constants_to_where_the_error_is_smallest() -> None:
    start = replace(TRUE, step_overhead_s=0.001, frontend_latency_s=0.02)

    def error(candidate: AcceleratorProfile) -> float:
        return (
            math.log(candidate.step_overhead_s / TRUE.step_overhead_s) ** 2
            + math.log(candidate.frontend_latency_s / TRUE.frontend_latency_s) ** 2
        )

    refined = refine_profile(start, error, fields=("step_overhead_s", "frontend_latency_s"))
    assert refined.step_overhead_s == pytest.approx(TRUE.step_overhead_s, rel=1e-2)
    assert refined.frontend_latency_s == pytest.approx(TRUE.frontend_latency_s, rel=1e-2)
    assert refined.linear_s_per_token == start.linear_s_per_token  # fields not named stay
