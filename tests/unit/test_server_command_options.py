"""Options of the commands that start servers or run benchmarks (and of ``keys rotate``): a value
out of range is a usage error naming the option, not a traceback from the server once it starts,
nor from the benchmark once it has run."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.cli.main import build_parser


def parse(argv: list[str]) -> object:
    return build_parser(argv).parse_args(argv)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["up", "--time-scale", "-1"], "--time-scale"),
        (["sim", "--model", "m", "--time-scale", "-0.5"], "--time-scale"),
        (["sim", "--model", "m", "--time-scale", "slow"], "--time-scale"),
        (["sim", "--model", "m", "--port", "99999"], "--port"),
        (["sim", "--model", "m", "--port", "0"], "--port"),
        (["bench", "quota-accuracy", "--out", "o", "--time-scale", "-1"], "--time-scale"),
        (["keys", "rotate", "KEY", "--grace-s", "-1"], "--grace-s"),
        (["keys", "rotate", "KEY", "--grace-s", "604801"], "--grace-s"),
    ],
)
def test_a_value_out_of_range_is_a_usage_error(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err


@pytest.mark.parametrize("scale", ["0", "0.5", "2"])
def test_a_time_scale_of_zero_or_more_is_taken(scale: str) -> None:
    assert vars(parse(["sim", "--model", "m", "--time-scale", scale]))["time_scale"] == float(scale)


BENCHMARKS = [
    ["overhead"],
    ["metering"],
    ["quota-accuracy"],
    ["fleet", "--workload", "azure-conv"],
    ["fidelity"],
    ["routing"],
    ["admission"],
]


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda argv: argv[0])
@pytest.mark.parametrize("where", ["a-file", "a-file/results"])
def test_a_benchmark_refuses_an_out_it_cannot_write_before_it_runs(
    benchmark: list[str], where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It ran (the routing benchmark for minutes) and then stopped on FileExistsError's or
    NotADirectoryError's traceback, its results lost."""
    (tmp_path / "a-file").write_text("not a directory\n")
    argv = ["bench", *benchmark, "--out", str(tmp_path / where)]
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --out:" in err and "not a directory" in err


def test_a_benchmark_takes_an_out_to_be_created(tmp_path: Path) -> None:
    out = tmp_path / "results" / "today"
    assert vars(parse(["bench", "admission", "--out", str(out)]))["out"] == out
    assert vars(parse(["bench", "admission", "--out", str(tmp_path)]))["out"] == tmp_path
