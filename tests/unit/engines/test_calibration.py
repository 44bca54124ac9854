"""Fitting a profile's step-time model to measurements recovers the model that produced them."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from tests.unit.engines.helpers import tiny_profile

from trunkline.engines import AcceleratorProfile
from trunkline.engines.calibration import (
    CalibrationPoints,
    cpu_share_factor,
    fit_profile,
    nelder_mead,
    nonnegative_least_squares,
    refine_profile,
    stretch_steps,
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


def test_a_stretched_profile_steps_that_much_slower_but_keeps_the_api_server_delay() -> None:
    slow = stretch_steps(TRUE, 2.5)

    for tokens, seqs, pairs, context in ((1, 1, 0, 100), (512, 1, 512 * 513 // 2, 0), (8, 8, 0, 0)):
        assert slow.step_time(tokens, seqs, pairs, context) == pytest.approx(
            2.5 * TRUE.step_time(tokens, seqs, pairs, context)
        )
    assert slow.frontend_latency_s == TRUE.frontend_latency_s
    assert slow.kv_cache_blocks == TRUE.kv_cache_blocks
    with pytest.raises(ValueError, match="> 0"):
        stretch_steps(TRUE, 0.0)


@pytest.mark.parametrize(
    ("reference", "share", "factor"),
    [
        (0.0, 0.0, 1.0),  # alone on the core both times
        (0.0, 0.5, 2.0),  # half the core taken: steps twice as long
        (0.5, 0.5, 1.0),  # as contended as during calibration: the fit holds as it is
        (0.5, 0.0, 0.5),  # calibrated while contended, measured alone: steps shorter
        (0.0, 0.99, 20.0),  # an engine that barely ran is capped, not divided by ~0
    ],
)
def test_the_cpu_share_factor_is_the_ratio_of_core_shares(
    reference: float, share: float, factor: float
) -> None:
    assert cpu_share_factor(reference, share) == pytest.approx(factor)


def test_a_waiting_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        cpu_share_factor(0.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        cpu_share_factor(-0.1, 0.2)


def test_a_measured_api_server_delay_is_added_to_a_fit_on_engine_side_ttfts() -> None:
    engine_side = points()
    measured = CalibrationPoints(engine_side.prefill, engine_side.decode, api_server_s=0.03)
    base = tiny_profile(max_model_len=4096, kv_cache_blocks=2048)

    plain = fit_profile(base, engine_side, name="engine")
    with_api = fit_profile(base, measured, name="client")

    assert with_api.frontend_latency_s == pytest.approx(plain.frontend_latency_s + 0.03)
    assert with_api.step_time(512, 1, 0, 0) == plain.step_time(512, 1, 0, 0)
