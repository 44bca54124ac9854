"""``trunkline bench fleet`` writes the shared result shape, a detail file and a plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from trunkline.bench.fleet import FleetBenchConfig, run_fleet_bench
from trunkline.cli.main import main
from trunkline.workloads import default_data_dir


def test_the_result_compares_every_policy_with_the_first(tmp_path: Path) -> None:
    config = FleetBenchConfig(
        workload="care:duration_s=20,rate=2", policies=("round-robin", "least-loaded"), replicas=2
    )
    result = run_fleet_bench(config, tmp_path, progress=io.StringIO())

    data = json.loads((tmp_path / "result.json").read_text())
    assert data["benchmark"] == "fleet"
    assert data["simulated"] is True
    assert data["inputs"]["workload"] == "care:duration_s=20,rate=2"
    assert list(data["runs"]) == ["round-robin", "least-loaded"]
    assert set(data["ratios"]) == {"least-loaded"}
    run = data["runs"]["round-robin"]
    for metric in ("ttft_p90_s", "itl_p50_s", "prefix_hit_rate", "oracle_hit_rate", "wall_s"):
        assert metric in run
    assert data["goals"] == []  # no goal belongs to a generated care workload
    assert result.runs == data["runs"]
    detail = json.loads((tmp_path / "detail.json").read_text())
    assert set(detail["round-robin"]["tiers"]) == {"silver"}
    assert len(detail["least-loaded"]["engines"]) == 2
    assert (tmp_path / "fleet.png").stat().st_size > 10_000


def test_mooncake_runs_carry_the_oracle_goal(tmp_path: Path) -> None:
    if not (default_data_dir() / "mooncake_conversation_trace.jsonl").is_file():
        pytest.fail(
            "shared traces not found: put the shared data folder beside the repo"
            " (../shared) or set TRUNKLINE_DATA_DIR"
        )
    config = FleetBenchConfig(workload="mooncake-conv", policies=("round-robin",), limit=150)
    result = run_fleet_bench(config, tmp_path, progress=io.StringIO())
    [goal] = result.goals
    assert goal.target == "<= 0.5"
    run = result.runs["round-robin"]
    assert goal.value == pytest.approx(run["prefix_hit_rate"] / run["oracle_hit_rate"])


def test_the_command_prints_the_table_and_refuses_no_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["bench", "fleet", "--workload", "netops:duration_s=60", "--policies", "least-loaded",
         "--replicas", "2", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "benchmark fleet (simulated engine), baseline: least-loaded" in out
    assert "slo_attainment_gold" in out
    assert (
        main(["bench", "fleet", "--workload", "care", "--policies", ",", "--out", str(tmp_path)])
        == 2
    )


@pytest.mark.parametrize(
    ("option", "value"), [("--limit", "0"), ("--limit", "-1"), ("--duration", "-5")]
)
def test_a_run_of_no_requests_is_refused_naming_its_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    """--limit -1 stopped on islice's ValueError traceback; --limit 0 and a negative
    --duration replayed no request and wrote a result of nothing, exit 0."""
    out = tmp_path / "out"
    argv = ["bench", "fleet", "--workload", "care", option, value, "--out", str(out)]
    assert main(argv) == 2
    assert option in capsys.readouterr().err
    assert not out.exists()
