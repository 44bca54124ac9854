"""``trunkline bench overhead`` end to end, small: real engine and gateway processes, n=20.

No timing thresholds here: timing claims live in the benchmark's own output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trunkline.cli.main import main


def test_overhead_writes_both_runs_and_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "overhead"

    code = main(
        ["bench", "overhead", "--out", str(out), "-n", "20", "--warmup", "5", "--block", "5"]
    )

    assert code == 0
    data = json.loads((out / "result.json").read_text())
    assert data["benchmark"] == "overhead"
    assert data["simulated"] is True
    assert data["inputs"]["n"] == 20
    assert data["inputs"]["engine_profile"] == "h100"
    assert data["inputs"]["prompt_tokens"] > 0
    assert list(data["runs"]) == ["direct", "gateway"]
    for run in data["runs"].values():
        for metric in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
            assert run[metric] > 0
        assert run["min_ms"] <= run["p50_ms"] <= run["p99_ms"] <= run["max_ms"]
    gateway, direct = data["runs"]["gateway"], data["runs"]["direct"]
    assert data["ratios"]["gateway"]["p50_ms"] == pytest.approx(
        gateway["p50_ms"] / direct["p50_ms"]
    )
    added_p50 = next(g for g in data["goals"] if g["name"] == "added p50 latency (ms)")
    assert added_p50["value"] == pytest.approx(gateway["p50_ms"] - direct["p50_ms"])
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    table = capsys.readouterr().out
    assert "gateway - direct (ms)" in table
    assert "added p50 latency (ms)" in table


def test_overhead_refuses_too_few_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "overhead", "--out", str(tmp_path), "-n", "1"])

    assert code == 2
    assert "requests >= 2" in capsys.readouterr().err
    assert not (tmp_path / "result.json").exists()
