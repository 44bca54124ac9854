"""Calibrate a profile's step-time model to measurements of a real engine.

Two kinds of measurement pin the model down (``trunkline bench fidelity`` takes them on real
vLLM): the TTFT of a lone request against its prompt length, and the steady inter-token latency
against the number of requests decoding together. With no queueing, the model says

    ITL(b)  = step_overhead + b * (linear_per_token + per_seq)            (decode steps)
    TTFT(P) = frontend + step_overhead + per_seq + P * linear_per_token
              + prefill_attention_per_pair * P (P + 1) / 2                (one prefill step)

so a line through the decode points gives the overhead and the per-sequence slope, and a
non-negative least-squares fit of the prefill points gives the rest (:func:`fit_profile`). The
weight-streaming floor and the decode attention term are folded into those (a tiny model has
neither to speak of).
When the TTFTs are the engine's own (vLLM's queue and prefill histograms), the API server's
share, measured apart, is added to ``frontend`` (``CalibrationPoints.api_server_s``).

Isolated requests miss what only shows under load (the API server, the load generator and the
engine sharing CPUs); :func:`refine_profile` then adjusts the fitted constants, in log space by
Nelder-Mead, to minimise an error the caller measures by simulating its calibration loads.

On a shared machine other processes take part of the engine's core: a step then lasts longer by
the inverse of the share the engine got. :func:`cpu_share_factor` turns two measured waiting
shares into that ratio, and :func:`stretch_steps` applies it to a profile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trunkline.engines.profiles import STEP_COSTS, AcceleratorProfile

__all__ = [
    "REFINED_FIELDS",
    "STEP_COSTS",
    "CalibrationPoints",
    "cpu_share_factor",
    "fit_profile",
    "nelder_mead",
    "nonnegative_least_squares",
    "refine_profile",
    "stretch_steps",
]

# By default the API server's delay stays as the isolated requests measured it: load-dependent
# slowness belongs to the engine's steps, where a router's view of the engine can see it. A
# caller that matches engine-side figures too can free it (`trunkline bench fidelity` does).
REFINED_FIELDS = (
    "step_overhead_s",
    "linear_s_per_token",
    "per_seq_s",
    "prefill_attention_s_per_pair",
)

_MAX_WAIT_SHARE = 0.95  # beyond this the engine barely ran: no ratio is meaningful


@dataclass(frozen=True, slots=True)
class CalibrationPoints:
    prefill: Sequence[tuple[int, float]]
    """``(prompt tokens, TTFT seconds)`` of a request alone on the engine."""
    decode: Sequence[tuple[int, float]]
    """``(requests decoding together, inter-token seconds)`` in steady decode."""
    api_server_s: float = 0.0
    """When ``prefill`` holds engine-side TTFTs (vLLM's queue + prefill histograms): the
    measured rest of the client's TTFT, added to the fitted ``frontend_latency_s``."""


def fit_profile(
    base: AcceleratorProfile, points: CalibrationPoints, *, name: str
) -> AcceleratorProfile:
    """``base`` (capacity and limits kept) with a step-time model fitted to ``points``."""
    if len(points.decode) < 2 or len(points.prefill) < 3:
        raise ValueError("need at least two decode points and three prefill points")
    overhead, slope = nonnegative_least_squares(
        [[1.0, float(batch)] for batch, _ in points.decode], [itl for _, itl in points.decode]
    )
    rows = [[1.0, float(p), p * (p + 1) / 2.0] for p, _ in points.prefill]
    targets = [ttft - overhead for _, ttft in points.prefill]
    constant, per_token, per_pair = nonnegative_least_squares(rows, targets)
    per_seq = max(slope - per_token, 0.0)
    return dataclasses.replace(
        base,
        name=name,
        step_overhead_s=overhead,
        weights_read_s=0.0,
        linear_s_per_token=per_token,
        per_seq_s=per_seq,
        prefill_attention_s_per_pair=per_pair,
        attention_s_per_context_token=0.0,
        frontend_latency_s=max(constant - per_seq, 0.0) + points.api_server_s,
    )


def nonnegative_least_squares(
    rows: Sequence[Sequence[float]], targets: Sequence[float]
) -> list[float]:
    """Least squares with every coefficient >= 0: drop the most negative one and refit."""
    active = list(range(len(rows[0])))
    while True:
        solution = _least_squares([[row[i] for i in active] for row in rows], targets)
        worst = min(range(len(active)), key=lambda i: solution[i])
        if solution[worst] >= 0 or len(active) == 1:
            coefficients = [0.0] * len(rows[0])
            for index, value in zip(active, solution, strict=True):
                coefficients[index] = max(value, 0.0)
            return coefficients
        del active[worst]


def _least_squares(rows: Sequence[Sequence[float]], targets: Sequence[float]) -> list[float]:
    """Solve the normal equations by Gaussian elimination with partial pivoting."""
    size = len(rows[0])
    # Scale columns so a per-pair coefficient (1e-9) and a constant (1e-2) are equally well posed.
    scales = [max(abs(row[j]) for row in rows) or 1.0 for j in range(size)]
    scaled = [[row[j] / scales[j] for j in range(size)] for row in rows]
    matrix = [
        [sum(r[i] * r[j] for r in scaled) for j in range(size)]
        + [sum(r[i] * t for r, t in zip(scaled, targets, strict=True))]
        for i in range(size)
    ]
    for column in range(size):
        pivot = max(range(column, size), key=lambda r: abs(matrix[r][column]))
        matrix[column], matrix[pivot] = matrix[pivot], matrix[column]
        if abs(matrix[column][column]) < 1e-12:
            raise ValueError("the calibration points do not determine the model")
        for row in range(size):
            if row != column:
                factor = matrix[row][column] / matrix[column][column]
                matrix[row] = [
                    a - factor * b for a, b in zip(matrix[row], matrix[column], strict=True)
                ]
    return [matrix[i][size] / matrix[i][i] / scales[i] for i in range(size)]


def refine_profile(
    profile: AcceleratorProfile,
    error: Callable[[AcceleratorProfile], float],
    *,
    fields: Sequence[str] = REFINED_FIELDS,
    iterations: int = 150,
) -> AcceleratorProfile:
    """``profile`` with ``fields`` moved to minimise ``error`` (each kept positive)."""

    def build(point: Sequence[float]) -> AcceleratorProfile:
        changes: dict[str, object] = {
            name: math.exp(value) for name, value in zip(fields, point, strict=True)
        }
        return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]

    # A zero (a term the first fit dropped) starts small rather than at minus infinity.
    start = [math.log(max(getattr(profile, name), 1e-7)) for name in fields]
    best = nelder_mead(lambda point: error(build(point)), start, iterations=iterations)
    return build(best)


def nelder_mead(
    objective: Callable[[Sequence[float]], float],
    start: Sequence[float],
    *,
    step: float = 0.7,
    iterations: int = 150,
) -> list[float]:
    """Minimise ``objective`` from ``start`` with the Nelder-Mead simplex (standard constants)."""
    simplex = [list(start)] + [
        [value + (step if i == j else 0.0) for j, value in enumerate(start)]
        for i in range(len(start))
    ]
    scored = sorted(((objective(p), p) for p in simplex), key=lambda item: item[0])
    for _ in range(iterations):
        worst_value, worst = scored[-1]
        centre = [sum(p[i] for _, p in scored[:-1]) / (len(scored) - 1) for i in range(len(start))]

        def toward(
            factor: float, centre: list[float] = centre, worst: list[float] = worst
        ) -> list[float]:
            return [c + factor * (c - w) for c, w in zip(centre, worst, strict=True)]

        reflected = toward(1.0)
        reflected_value = objective(reflected)
        if reflected_value < scored[0][0]:
            expanded = toward(2.0)
            expanded_value = objective(expanded)
            scored[-1] = (
                (expanded_value, expanded)
                if expanded_value < reflected_value
                else (reflected_value, reflected)
            )
        elif reflected_value < scored[-2][0]:
            scored[-1] = (reflected_value, reflected)
        else:
            contracted = toward(-0.5)
            contracted_value = objective(contracted)
            if contracted_value < worst_value:
                scored[-1] = (contracted_value, contracted)
            else:
                best = scored[0][1]
                shrunk = [
                    [b + 0.5 * (v - b) for b, v in zip(best, p, strict=True)] for _, p in scored[1:]
                ]
                scored = [scored[0], *((objective(p), p) for p in shrunk)]
        scored.sort(key=lambda item: item[0])
    return scored[0][1]


def stretch_steps(profile: AcceleratorProfile, factor: float) -> AcceleratorProfile:
    """``profile`` with every step cost times ``factor`` (the API server's delay kept)."""
    if factor <= 0:
        raise ValueError("factor must be > 0")
    changes: dict[str, object] = {name: getattr(profile, name) * factor for name in STEP_COSTS}
    return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]


def cpu_share_factor(reference_wait_share: float, wait_share: float) -> float:
    """How much longer a step lasts when other processes take ``wait_share`` of the engine's
    runnable time than when they take ``reference_wait_share`` (the calibration's)."""
    for share in (reference_wait_share, wait_share):
        if not 0.0 <= share < 1.0:
            raise ValueError("a waiting share lies in [0, 1)")
    reference = min(reference_wait_share, _MAX_WAIT_SHARE)
    return (1.0 - reference) / (1.0 - min(wait_share, _MAX_WAIT_SHARE))
