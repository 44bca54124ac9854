"""``trunkline bench metering`` runs from the CLI on servers it starts itself and writes the
result shape every benchmark shares (small counts: this checks the command, not the speed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from support.processes import TRUNKLINE, trunkline_env

pytestmark = pytest.mark.integration


def test_bench_metering_writes_runs_ratios_goals_and_a_plot(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = subprocess.run(
        [
            *TRUNKLINE,
            "bench",
            "metering",
            "--out",
            str(out),
            "-n",
            "3000",
            "--baseline-events",
            "300",
            "--writers",
            "4",
            "--export-events",
            "5000",
            "--unsafe-fast-postgres",
        ],
        env=trunkline_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["benchmark"] == "metering" and result["simulated"] is False
    assert list(result["runs"]) == ["one-row-per-request", "batched-stream"]
    assert "events_per_s" in result["ratios"]["batched-stream"]
    goals = {g["name"]: g for g in result["goals"]}
    assert goals["events lost"]["met"] and goals["events doubled"]["met"]
    pipeline = result["runs"]["batched-stream"]
    assert pipeline["token_difference"] == 0 and pipeline["export_focus_csv_rows"] > 0
    # the rollup job against its baseline, on the same month (the bench checks they agree)
    baseline = result["runs"]["one-row-per-request"]
    assert baseline["rollup_rows"] == pipeline["rollup_rows"] > 0
    assert "rollup_events_per_s" in result["ratios"]["batched-stream"]
    assert (out / "metering.png").stat().st_size > 0
    assert "one-row-per-request" in done.stdout and "batched-stream / one-row" in done.stdout
