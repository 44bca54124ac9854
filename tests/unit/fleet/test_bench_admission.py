"""``trunkline bench admission`` writes the shared result shape, its goals, and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
