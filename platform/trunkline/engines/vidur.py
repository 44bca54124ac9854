"""Fit the linear-layer roofline to Vidur's measured kernel times (``vidur_profiling/*mlp.csv``).

Vidur (microsoft/vidur, MLSys'24) profiles every linear operator of one transformer layer for
``num_tokens`` from 1 to 32k. Summing the operators of a layer, times the number of layers, plus
the embedding gives the linear part of one forward pass; :func:`fit_roofline` fits
``hypot(floor, n * per_token)`` to those points by relative least squares, and
:func:`efficiencies` turns the fit into the achieved bandwidth and compute fractions that
:mod:`trunkline.engines.hardware` records for A100 and H100.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from trunkline.engines.hardware import Accelerator, ModelShape

__all__ = ["RooflineFit", "efficiencies", "fit_roofline", "linear_layer_times"]

# The operators of one Llama layer in Vidur's mlp.csv; the residual add runs twice per layer.
_LAYER_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
    "add",
)


@dataclass(frozen=True, slots=True)
class RooflineFit:
    floor_s: float
    per_token_s: float
    median_relative_error: float
    max_relative_error: float

    def predict(self, num_tokens: int) -> float:
        return math.hypot(self.floor_s, num_tokens * self.per_token_s)


def linear_layer_times(
    path: Path, num_layers: int, *, tensor_parallel: int = 1
) -> Iterator[tuple[int, float]]:
    """``(num_tokens, seconds)`` of the linear part of one forward pass, median kernel times."""
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["num_tensor_parallel_workers"]) != tensor_parallel:
                continue
            layer_ms = sum(float(row[f"time_stats.{op}.median"]) for op in _LAYER_OPS)
            total_ms = layer_ms * num_layers + float(row["time_stats.emb.median"])
            yield int(row["num_tokens"]), total_ms / 1000.0


def fit_roofline(points: Sequence[tuple[int, float]]) -> RooflineFit:
    """Fit ``t = sqrt(floor² + (n·per_token)²)``: linear least squares in ``t²``, relative."""
    if len(points) < 2:
        raise ValueError("a fit needs at least two points")
    a11 = a12 = a22 = b1 = b2 = 0.0
    for n, t in points:
        x1, x2 = 1.0 / t**2, n * n / t**2  # each equation divided by t² (relative error)
        a11, a12, a22 = a11 + x1 * x1, a12 + x1 * x2, a22 + x2 * x2
        b1, b2 = b1 + x1, b2 + x2
    det = a11 * a22 - a12 * a12
    floor_sq = (b1 * a22 - b2 * a12) / det
    per_token_sq = (a11 * b2 - a12 * b1) / det
    if floor_sq <= 0 or per_token_sq <= 0:
        raise ValueError("the points do not follow a roofline")
    floor, per_token = math.sqrt(floor_sq), math.sqrt(per_token_sq)
    errors = sorted(abs(math.hypot(floor, n * per_token) - t) / t for n, t in points)
    return RooflineFit(floor, per_token, errors[len(errors) // 2], errors[-1])


def efficiencies(
    fit: RooflineFit, model: ModelShape, accelerator: Accelerator
) -> tuple[float, float]:
    """``(mbu, mfu)``: the fitted floor streams the linear weights, the slope does their FLOPs."""
    mbu = model.linear_params * model.dtype_bytes / fit.floor_s / accelerator.bandwidth_bytes_s
    mfu = 2 * model.linear_params / fit.per_token_s / accelerator.bf16_flops
    return mbu, mfu
