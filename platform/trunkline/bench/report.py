"""The one result shape every ``trunkline bench NAME --out DIR`` writes, and its printed table.

``DIR/result.json`` reads::

    {"benchmark": "overhead", "simulated": true, "inputs": {...},
     "runs":   {"<baseline>": {"metric": 0.0}, "<variant>": {...}},
     "ratios": {"<variant>": {"metric": variant / baseline}},
     "goals":  [{"name": "...", "target": "<= 2", "value": 0.0, "met": true}]}

``runs`` holds raw metrics per variant, the first variant being the baseline; ``ratios`` is
derived from ``runs`` when the file is written; each goal's value is measured from ``runs`` by the
goal's own function, so no figure in the file is ever typed in.
"""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "BenchResult",
    "Goal",
    "GoalSpec",
    "Metrics",
    "Runs",
    "evaluate_goals",
    "print_table",
    "ratios",
    "write_result",
]

Metrics = dict[str, float]
Runs = dict[str, Metrics]

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


@dataclass(frozen=True, slots=True)
class GoalSpec:
    """A target a benchmark exists to check; ``measure`` reads the value off the runs."""

    name: str
    target: str
    """A comparison and a number, such as ``"<= 2"`` or ``">= 0.85"``."""
    measure: Callable[[Runs], float]

    def __post_init__(self) -> None:
        _parse_target(self.target)  # refuse a malformed target when it is declared


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    target: str
    value: float
    met: bool


def _parse_target(target: str) -> tuple[Callable[[float, float], bool], float]:
    op, _, number = target.strip().partition(" ")
    try:
        return _COMPARISONS[op], float(number)
    except (KeyError, ValueError):
        raise ValueError(
            f"goal target {target!r} must read '<op> <number>' with op one of "
            f"{', '.join(_COMPARISONS)}"
        ) from None


def evaluate_goals(specs: Sequence[GoalSpec], runs: Runs) -> list[Goal]:
    """Measure every goal on ``runs``; a value that is not a number never meets its target."""
    goals = []
    for spec in specs:
        compare, threshold = _parse_target(spec.target)
        value = float(spec.measure(runs))
        met = math.isfinite(value) and compare(value, threshold)
        goals.append(Goal(spec.name, spec.target, value, met))
    return goals


def ratios(runs: Runs, baseline: str) -> dict[str, Metrics]:
    """Each other variant's metrics divided by the baseline's.

    A metric the baseline lacks, or where the baseline is zero, has no ratio and is left out.
    """
    base = runs[baseline]
    return {
        name: {
            metric: value / base[metric]
            for metric, value in metrics.items()
            if base.get(metric) not in (None, 0.0)
        }
        for name, metrics in runs.items()
        if name != baseline
    }


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One benchmark run: what went in, the metrics per variant, and the goals measured on them."""

    benchmark: str
    simulated: bool
    inputs: Mapping[str, Any]
    runs: Runs
    goals: list[Goal]

    @classmethod
    def build(
        cls,
        benchmark: str,
        *,
        simulated: bool,
        inputs: Mapping[str, Any],
        runs: Runs,
        goals: Sequence[GoalSpec] = (),
    ) -> BenchResult:
        if not runs:
            raise ValueError("a benchmark result needs at least one run (the baseline)")
        return cls(benchmark, simulated, dict(inputs), runs, evaluate_goals(goals, runs))

    @property
    def baseline(self) -> str:
        return next(iter(self.runs))

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "simulated": self.simulated,
            "inputs": dict(self.inputs),
            "runs": self.runs,
            "ratios": ratios(self.runs, self.baseline),
            "goals": [
                {"name": g.name, "target": g.target, "value": _finite(g.value), "met": g.met}
                for g in self.goals
            ],
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_result(out_dir: Path, result: BenchResult) -> Path:
    """Write ``out_dir/result.json`` (creating ``out_dir``) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    return path


def print_table(
    result: BenchResult,
    *,
    metrics: Sequence[str] | None = None,
    unit: str = "",
    file: TextIO | None = None,
) -> None:
    """Print baseline and variants side by side, each variant's difference and ratio, then goals.

    ``metrics`` picks and orders the rows (default: every metric of the baseline); ``unit`` is
    appended to the difference column's heading.
    """
    out = file or sys.stdout
    base = result.baseline
    others = [name for name in result.runs if name != base]
    rows = list(metrics) if metrics is not None else list(result.runs[base])
    table_ratios = ratios(result.runs, base)
    suffix = f" ({unit})" if unit else ""
    header = ["metric", *result.runs]
    for name in others:
        header += [f"{name} - {base}{suffix}", f"{name} / {base}"]
    lines = [header]
    for metric in rows:
        line = [metric, *(_number(result.runs[v].get(metric)) for v in result.runs)]
        for name in others:
            value, reference = result.runs[name].get(metric), result.runs[base].get(metric)
            diff = None if value is None or reference is None else value - reference
            line += [_number(diff, signed=True), _ratio(table_ratios[name].get(metric))]
        lines.append(line)
    kind = "simulated engine" if result.simulated else "real engine"
    print(f"benchmark {result.benchmark} ({kind}), baseline: {base}", file=out)
    _print_aligned(lines, out)
    for goal in result.goals:
        verdict = "met" if goal.met else "NOT MET"
        print(f"goal {goal.name}: {goal.value:.3f} (target {goal.target}) {verdict}", file=out)


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _print_aligned(lines: list[list[str]], out: TextIO) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip(), file=out)
