"""``trunkline bench pool``: both pools timed on the same states, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkline.bench.pool_handout import pool_states, run_pool_bench
from trunkline.cli.main import main


def test_the_bench_writes_both_pools_side_by_side_with_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pool"
    assert main(["bench", "pool", "--out", str(out), "--times", "1", "--rounds", "1"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert list(result["runs"]) == ["httpcore", "trunkline"]
    metrics = [f"{label}_ms" for label, _, _ in pool_states((200, 500, 1000), (100, 500))]
    for name in ("httpcore", "trunkline"):
        assert sorted(result["runs"][name]) == sorted(metrics)
        assert all(value > 0 for value in result["runs"][name].values())
    assert sorted(result["ratios"]["trunkline"]) == sorted(metrics)
    [goal] = result["goals"]
    assert goal["target"] == "<= 0.1"
    assert (out / "handout.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "trunkline / httpcore" in printed and "idle_1000_ms" in printed


def test_states_beyond_the_pool_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="idle connections go from 1 to 1000"):
        run_pool_bench(tmp_path, idle=(2000,))
