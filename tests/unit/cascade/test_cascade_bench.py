"""The cascade benchmark's shape, and the labelled easy-heavy workload it runs on."""

from __future__ import annotations

import json
from pathlib import Path

from trunkline.bench.cascade import CascadeBenchConfig, run_cascade_bench, write_cascade_bench
from trunkline.workloads.difficulty import DifficultyWorkload


def test_the_difficulty_workload_is_repeatable_easy_heavy_and_labelled() -> None:
    workload = DifficultyWorkload(seed=3, duration_s=200.0, rate=5.0, hard_share=0.25)
    first = list(workload.labelled())
    again = list(workload.labelled())

    assert [(x.request.request_id, x.hard) for x in first] == [
        (x.request.request_id, x.hard) for x in again
    ]
    assert [r.request_id for r in workload.requests()] == [x.request.request_id for x in first]
    hard = [x.request for x in first if x.hard]
    easy = [x.request for x in first if not x.hard]
    assert 0.18 < len(hard) / len(first) < 0.32
    mean = lambda rs, f: sum(f(r) for r in rs) / len(rs)  # noqa: E731
    assert mean(hard, lambda r: r.prompt.num_tokens) > 2 * mean(easy, lambda r: r.prompt.num_tokens)
    assert mean(hard, lambda r: r.max_tokens) > 2 * mean(easy, lambda r: r.max_tokens)
    assert workload.tenants == {"qa": "silver"}


def test_the_benchmark_compares_always_large_with_the_cascade(tmp_path: Path) -> None:
    result = write_cascade_bench(tmp_path, CascadeBenchConfig(requests=150, rate=10.0))

    written = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "cascade.png").stat().st_size > 0
    assert written["benchmark"] == "cascade" and written["simulated"] is True
    assert list(written["runs"]) == ["always-large", "cascade"]
    cascade = written["runs"]["cascade"]
    assert 0.05 < cascade["escalation_rate"] < 0.5
    assert cascade["added_latency_p50_s"] > 0  # an escalated request waited for the small one
    assert written["runs"]["always-large"]["escalation_rate"] == 0.0
    [goal] = written["goals"]
    assert goal["target"] == "<= 0.6"
    baseline = written["runs"]["always-large"]["cost_per_1k_requests_usd"]
    assert goal["value"] == cascade["cost_per_1k_requests_usd"] / baseline
    assert result.goals[0].met is (goal["value"] <= 0.6)


def test_run_cascade_bench_returns_the_result_json_shape() -> None:
    result = run_cascade_bench(seed=2, requests=80)
    assert set(result) == {"benchmark", "simulated", "inputs", "runs", "ratios", "goals"}
    assert result["inputs"]["seed"] == 2 and result["inputs"]["requests"] <= 80
