"""``trunkline bench admission`` writes the shared result shape, its goals, and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkline.bench._admission_runs import Scenario, run_variant
from trunkline.bench._admission_timing import RecordingPolicy, replay_decide_times
from trunkline.bench.admission import AdmissionBenchConfig
from trunkline.cli.main import main


def test_the_cli_compares_admission_with_fifo_and_reports_every_goal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "admission",
            "--out",
            str(out),
            "--replicas",
            "1",
            "--duration",
            "6",
            "--loads",
            "2",
        ]
    )
    assert code == 0
    data = json.loads((out / "result.json").read_text())
    assert (data["benchmark"], data["simulated"]) == ("admission", True)
    assert list(data["runs"]) == ["fifo", "admission"]
    admission = data["runs"]["admission"]
    for metric in ("capacity_rps", "gold_ttft_attainment@2x", "goodput_over_capacity@2x"):
        assert metric in admission
    assert admission["offered_rps@2x"] == pytest.approx(2 * admission["capacity_rps"])
    names = [goal["name"] for goal in data["goals"]]
    assert len(names) == 8 and any("Jain" in name for name in names)
    assert (out / "admission.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "baseline: fifo" in printed and "goal gold within TTFT SLO at 2x" in printed


def test_the_goals_need_the_2x_load() -> None:
    with pytest.raises(ValueError, match="2x"):
        AdmissionBenchConfig(loads=(1.0, 3.0))


def test_the_replay_reaches_the_runs_decisions_and_times_each_one() -> None:
    scenario = Scenario(replicas=1, duration_s=5.0, burst_replicas=1)
    recorder = RecordingPolicy()
    result = scenario.run(30.0, recorder)
    times = replay_decide_times(recorder, repeats=2)
    assert [outcome for outcome, _ in times] == [o.decision for o in result.outcomes]
    assert all(seconds > 0 for _, seconds in times)


def test_the_burst_pool_serves_only_gold_and_is_paid_only_while_it_serves() -> None:
    scenario = Scenario(replicas=1, duration_s=10.0, burst_replicas=1)
    metrics, result = run_variant(scenario, 24.0, True, capacity=12.0)
    assert metrics["gold_on_burst_share"] > 0
    assert metrics["silver_on_burst_share"] == metrics["bronze_on_burst_share"] == 0
    [burst] = [e for e in result.engines if e.pool == "burst"]
    assert 0 < metrics["burst_gpu_s"] == burst.busy_s < result.horizon_s
    assert metrics["shared_gpu_s"] == result.horizon_s
    # Same flavor, one replica each: the burst one costs less, as it is paid only while busy.
    assert metrics["burst_cost_usd"] < metrics["shared_cost_usd"]
