"""The shared result shape: ratios against the baseline, goals measured from runs, the JSON."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from trunkline.bench.report import (
    BenchResult,
    GoalSpec,
    Runs,
    evaluate_goals,
    print_table,
    ratios,
    write_result,
)

RUNS: Runs = {
    "round-robin": {"ttft_p90_s": 2.0, "hit_rate": 0.0, "cost": 4.0},
    "prefix-load": {"ttft_p90_s": 1.0, "hit_rate": 0.6, "cost": 3.0},
    "oracle": {"ttft_p90_s": 0.5, "hit_rate": 0.7, "cost": 2.0},
}


def added_ttft(runs: Runs) -> float:
    return runs["prefix-load"]["ttft_p90_s"] - runs["round-robin"]["ttft_p90_s"]


def test_ratios_divide_every_other_variant_by_the_baseline() -> None:
    result = ratios(RUNS, "round-robin")

    assert set(result) == {"prefix-load", "oracle"}
    assert result["prefix-load"]["ttft_p90_s"] == pytest.approx(0.5)
    assert result["oracle"]["cost"] == pytest.approx(0.5)


def test_a_metric_whose_baseline_is_zero_has_no_ratio() -> None:
    assert "hit_rate" not in ratios(RUNS, "round-robin")["prefix-load"]


def test_ratios_against_another_baseline() -> None:
    result = ratios(RUNS, "oracle")

    assert set(result) == {"round-robin", "prefix-load"}
    assert result["round-robin"]["ttft_p90_s"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("target", "met"),
    [("<= -1", True), ("< -1", False), (">= -1", True), ("> -1", False), ("<= -2", False)],
)
def test_goals_are_measured_from_the_runs(target: str, met: bool) -> None:
    [goal] = evaluate_goals([GoalSpec("ttft change", target, added_ttft)], RUNS)

    assert goal.value == pytest.approx(-1.0)
    assert goal.met is met
    assert goal.target == target


def test_a_goal_follows_the_runs_it_is_measured_on() -> None:
    spec = GoalSpec("ttft change", "<= 0", added_ttft)
    worse = {**RUNS, "prefix-load": {**RUNS["prefix-load"], "ttft_p90_s": 3.0}}

    assert evaluate_goals([spec], RUNS)[0].met
    [goal] = evaluate_goals([spec], worse)
    assert (goal.value, goal.met) == (pytest.approx(1.0), False)


def test_a_value_that_is_not_a_number_never_meets_its_target() -> None:
    [goal] = evaluate_goals([GoalSpec("broken", "<= 1", lambda _runs: math.nan)], RUNS)

    assert goal.met is False


@pytest.mark.parametrize("target", ["2", "=< 2", "<= two", ""])
def test_a_malformed_target_is_refused_when_declared(target: str) -> None:
    with pytest.raises(ValueError, match="goal target"):
        GoalSpec("x", target, added_ttft)


def test_a_result_needs_a_baseline_run() -> None:
    with pytest.raises(ValueError, match="baseline"):
        BenchResult.build("routing", simulated=True, inputs={}, runs={})


def test_result_json_has_exactly_the_documented_shape(tmp_path: Path) -> None:
    result = BenchResult.build(
        "routing",
        simulated=True,
        inputs={"workload": "care", "seed": 1},
        runs=RUNS,
        goals=[GoalSpec("ttft change (s)", "<= -0.5", added_ttft)],
    )

    path = write_result(tmp_path / "out", result)

    assert path == tmp_path / "out" / "result.json"
    data = json.loads(path.read_text())
    assert list(data) == ["benchmark", "simulated", "inputs", "runs", "ratios", "goals"]
    assert data["benchmark"] == "routing"
    assert data["simulated"] is True
    assert data["inputs"] == {"workload": "care", "seed": 1}
    assert data["runs"] == RUNS
    assert list(data["runs"]) == ["round-robin", "prefix-load", "oracle"]
    assert data["ratios"] == ratios(RUNS, "round-robin")
    assert data["goals"] == [
        {"name": "ttft change (s)", "target": "<= -0.5", "value": -1.0, "met": True}
    ]


def test_a_goal_value_that_is_not_a_number_is_written_as_null(tmp_path: Path) -> None:
    result = BenchResult.build(
        "x", simulated=False, inputs={}, runs=RUNS, goals=[GoalSpec("g", ">= 0", lambda _r: 1e400)]
    )

    data = json.loads(write_result(tmp_path, result).read_text())

    assert data["goals"] == [{"name": "g", "target": ">= 0", "value": None, "met": False}]


def test_the_table_puts_variants_side_by_side_with_differences_and_ratios() -> None:
    runs: Runs = {
        "direct": {"p50_ms": 1.0, "p99_ms": 2.0},
        "gateway": {"p50_ms": 3.5, "p99_ms": 5.0},
    }
    result = BenchResult.build(
        "overhead",
        simulated=True,
        inputs={},
        runs=runs,
        goals=[GoalSpec("added p50 (ms)", "<= 2", lambda r: r["gateway"]["p50_ms"] - 1.0)],
    )
    out = io.StringIO()

    print_table(result, metrics=["p99_ms"], unit="ms", file=out)

    lines = out.getvalue().splitlines()
    assert "simulated" in lines[0]
    assert lines[1].split() == ["metric", "direct", "gateway", "gateway", "-", "direct", "(ms)",
                                "gateway", "/", "direct"]  # fmt: skip
    assert lines[2].split() == ["p99_ms", "2.000", "5.000", "+3.000", "2.50x"]
    assert not any(line.startswith("p50_ms") for line in lines)
    assert lines[3] == "goal added p50 (ms): 2.500 (target <= 2) NOT MET"
