"""``trunkline bench routing``: the operating-point search, the goals computed from given
figures, the summary that gathers sections, and a small simulated run end to end."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from trunkline.bench._routing_capacity import candidate_fleets, headroom, search_fleets
from trunkline.bench._routing_common import RoutingBenchConfig, Section
from trunkline.bench._routing_external import external_section, section_from_dict
from trunkline.bench._routing_goals import (
    azure_goals,
    care_goals,
    hetero_goals,
    mooncake_goals,
    placement_goals,
    scaling_goals,
)
from trunkline.bench._routing_search import find_operating_point, goodput_rps, meets_slo
from trunkline.bench._routing_tiers import by_tier
from trunkline.bench._routing_tiers import ratios as tier_ratios
from trunkline.bench.report import GoalSpec, Metrics, Runs, evaluate_goals
from trunkline.bench.routing import merge_sections, parse_sections, run_routing_bench
from trunkline.cli.main import main
from trunkline.fleet import RequestOutcome


def _load_where_p90_is(rate_to_p90: float) -> tuple[list[float], Callable[[float], Metrics]]:
    """A fake simulator whose p90 TTFT grows with the rate: the SLO holds up to 1 / factor."""
    tried: list[float] = []

    def measure(rate: float) -> Metrics:
        tried.append(rate)
        return {"completed": 10.0, "ttft_p90_s": rate * rate_to_p90}

    return tried, measure


@pytest.mark.parametrize("start", [0.5, 3.0, 40.0])
def test_the_search_finds_the_highest_rate_meeting_the_slo_from_any_start(start: float) -> None:
    tried, measure = _load_where_p90_is(0.1)  # p90 <= 1 s up to rate 10
    point = find_operating_point(measure, start, rel_tol=0.02, max_runs=20)
    assert 10 / 1.02 <= point.rate <= 10
    assert point.rate in tried
    assert point.metrics["ttft_p90_s"] <= 1.0
    assert point.runs == len(tried)


def test_the_search_stops_at_its_run_budget_and_reports_zero_when_nothing_meets() -> None:
    tried, measure = _load_where_p90_is(1e9)
    point = find_operating_point(measure, 1.0, max_runs=4)
    assert point.rate == 0.0
    assert len(tried) == 4
    with pytest.raises(ValueError, match="positive"):
        find_operating_point(measure, 0.0)


def test_a_run_meets_the_slo_only_with_finished_requests_and_p90_within() -> None:
    assert meets_slo({"completed": 5.0, "ttft_p90_s": 1.0})
    assert not meets_slo({"completed": 5.0, "ttft_p90_s": 1.01})
    assert not meets_slo({"completed": 0.0, "ttft_p90_s": 0.1})
    assert not meets_slo({"completed": 5.0, "ttft_p90_s": math.nan})


def test_a_bounded_time_per_output_token_lowers_the_operating_point() -> None:
    def measure(rate: float) -> Metrics:  # p90 TTFT <= 1 s up to rate 10, TPOT <= 0.1 s up to 5
        return {"completed": 10.0, "ttft_p90_s": rate / 10, "tpot_p90_s": rate / 50}

    assert find_operating_point(measure, 1.0, rel_tol=0.02, max_runs=20).rate > 9.8
    bounded = find_operating_point(measure, 1.0, rel_tol=0.02, max_runs=20, tpot_p90_s=0.1)
    assert 5 / 1.02 <= bounded.rate <= 5
    assert bounded.metrics["tpot_p90_s"] <= 0.1
    assert not meets_slo({"completed": 5.0, "ttft_p90_s": 0.5}, tpot_p90_s=0.1)  # not measured


def test_goodput_counts_first_tokens_within_the_slo_per_second() -> None:
    assert goodput_rps([0.2, 0.9, 1.0, 1.5, 3.0], 2.0) == 1.5
    assert math.isnan(goodput_rps([0.1], 0.0))


def _values(runs: Runs, specs: list[GoalSpec]) -> list[tuple[float, bool]]:
    return [(round(g.value, 3), g.met) for g in evaluate_goals(specs, runs)]


def test_mooncake_goals_read_oracle_share_hit_ratio_and_balance_off_the_runs() -> None:
    runs: Runs = {
        "round-robin": {"prefix_hit_rate": 0.06, "requests_max_over_mean": 1.0},
        "prefix-aware": {
            "prefix_hit_rate": 0.33,
            "hit_rate_vs_oracle": 0.88,
            "requests_max_over_mean": 1.2,
        },
        "prefix-only": {"requests_max_over_mean": 7.5},
    }
    assert _values(runs, mooncake_goals("prefix-aware")) == [
        (0.88, True),
        (5.5, True),
        (1.2, False),
        (7.5, True),
    ]


def test_a_policy_that_did_not_run_never_meets_its_goals() -> None:
    runs: Runs = {"round-robin": {"output_tokens_per_gpu_s": 100.0, "goodput_rps": 4.0}}
    for goal in evaluate_goals([*care_goals("missing"), *azure_goals("missing")], runs):
        assert math.isnan(goal.value)
        assert not goal.met


def test_throughput_regression_scaling_and_cost_goals_from_given_figures() -> None:
    runs: Runs = {
        "round-robin": {"output_tokens_per_gpu_s": 100.0, "goodput_rps": 4.0},
        "ours": {
            "output_tokens_per_gpu_s": 210.0,
            "goodput_rps": 3.7,
            "azure_scaling": 1.95,
            "care_scaling": 1.9,
        },
    }
    assert _values(runs, care_goals("ours")) == [(2.1, True)]
    assert _values(runs, azure_goals("ours")) == [(0.925, False)]
    assert _values(runs, scaling_goals("ours")) == [(1.95, True), (1.9, False)]
    cost: Runs = {
        "best single flavor": {"cost_per_hour_usd": 10.0},
        "cheapest mix": {"cost_per_hour_usd": 8.8},
    }
    assert _values(cost, hetero_goals()) == [(0.88, True)]


def test_the_placed_mix_is_measured_against_the_cheaper_single_flavor_fleet() -> None:
    runs: Runs = {
        "one pool": {"cost_per_hour_usd": 16.0},
        "placed, one flavor": {"cost_per_hour_usd": 14.0},
        "placed, mixed flavors": {"cost_per_hour_usd": 13.0},
    }
    assert _values(runs, placement_goals()) == [(0.929, False)]
    del runs["placed, one flavor"]
    assert _values(runs, placement_goals()) == [(0.812, True)]
    del runs["placed, mixed flavors"]
    assert [g.met for g in evaluate_goals(placement_goals(), runs)] == [False]
    # A prefill/decode mix counts too, the cheaper of the two mixes against the single.
    runs["prefill/decode, mixed flavors"] = {"cost_per_hour_usd": 12.0}
    assert _values(runs, placement_goals()) == [(0.75, True)]
    runs["placed, mixed flavors"] = {"cost_per_hour_usd": 11.0}
    assert _values(runs, placement_goals()) == [(0.688, True)]


def test_the_summary_prefixes_metrics_by_section_and_measures_each_goal_on_its_own() -> None:
    sections = [
        Section("care", "c", {"least-loaded": {"x": 1.0}, "round-robin": {"x": 2.0}}, [], ["x"]),
        Section(
            "azure",
            "a",
            {"round-robin": {"goodput_rps": 4.0}, "ours": {"goodput_rps": 4.4}},
            azure_goals("ours"),
            ["goodput_rps"],
        ),
    ]
    runs, goals = merge_sections(sections)
    assert next(iter(runs)) == "round-robin"  # the baseline comes first
    assert runs["round-robin"] == {"care.x": 2.0, "azure.goodput_rps": 4.0}
    assert runs["ours"] == {"azure.goodput_rps": 4.4}
    (goal,) = evaluate_goals(goals, runs)
    assert goal.name.startswith("azure: ours: goodput")
    assert goal.value == pytest.approx(1.1)
    assert goal.met


def test_sections_parse_with_real_vllm_added_on_request_and_unknown_ones_refused() -> None:
    assert "real-vllm" not in parse_sections(None, real_vllm=False)
    assert parse_sections("care, azure", real_vllm=True) == ("care", "azure", "real-vllm")
    with pytest.raises(ValueError, match=r"unknown section.*nope.*known sections"):
        parse_sections("care,nope", real_vllm=False)


def test_the_tier_section_runs_only_when_named() -> None:
    assert "tiers" not in parse_sections(None, real_vllm=False)
    assert parse_sections("tiers", real_vllm=False) == ("tiers",)


def test_attainment_is_reported_per_tier_with_refused_requests_as_missed() -> None:
    outcomes = [
        RequestOutcome("g1", "t", "gold", 0.0, status="ok", slo_met=True),
        RequestOutcome("g2", "t", "gold", 0.0, status="rejected:429"),
        RequestOutcome("b1", "u", "bronze", 0.0, status="ok", slo_met=True),
    ]
    metrics = by_tier(outcomes)
    assert (metrics["slo_attainment_gold"], metrics["slo_attainment_bronze"]) == (0.5, 1.0)
    assert math.isnan(metrics["slo_attainment_silver"])


def test_tier_placement_is_compared_per_flavor_and_the_mix_against_the_cheapest_single() -> None:
    runs: Runs = {
        "one pool, h100": {"cost_per_hour_usd": 12.0},
        "one pool, l40s": {"cost_per_hour_usd": 24.0},
        "by tier, h100": {"cost_per_hour_usd": 12.0},
        "by tier, l40s": {"cost_per_hour_usd": 16.0},
        "by tier, mixed flavors": {"cost_per_hour_usd": 14.0},
    }
    assert tier_ratios(runs) == [
        "by tier / one pool on h100: 1.000",
        "by tier / one pool on l40s: 0.667",
        "mixed / cheapest single flavor: 1.167",
    ]
    del runs["by tier, mixed flavors"], runs["one pool, l40s"]
    assert tier_ratios(runs) == ["by tier / one pool on h100: 1.000"]


def test_fleets_are_listed_cheapest_first() -> None:
    fleets = candidate_fleets(("h100", "l40s"), 2)
    costs = [sum({"h100": 3.0, "l40s": 1.0}[f] * n for f, n in fleet) for fleet in fleets]
    assert costs == sorted(costs)
    assert len(fleets) == 8  # 3 x 3 counts, less the empty fleet


def _capacity_check(
    needed: float, tried: list[tuple[tuple[str, int], ...]]
) -> Callable[[tuple[tuple[str, int], ...]], bool]:
    """A fleet meets the SLO when its capacity (h100 = 3 units, l40s = 1) reaches ``needed``."""

    def check(fleet: tuple[tuple[str, int], ...]) -> bool:
        tried.append(fleet)
        return sum({"h100": 3, "l40s": 1}[f] * n for f, n in fleet) >= needed

    return check


def test_the_fleet_search_finds_the_best_single_flavor_and_a_cheaper_mix() -> None:
    # h100: 3 units for $3, l40s: 1 unit for $1 but at most 4 of them; 5 units are needed.
    tried: list[tuple[tuple[str, int], ...]] = []
    fleets = candidate_fleets(("h100", "l40s"), 4)
    single, mix = search_fleets(fleets, _capacity_check(5, tried))
    assert single == (("h100", 2), ("l40s", 0))  # $6: four L40S are not enough
    assert mix == (("h100", 1), ("l40s", 2))  # $5
    assert len(tried) == len(set(tried))  # no fleet run twice


def test_a_mix_that_is_worse_for_some_requests_is_not_counted() -> None:
    # The $5 mix meets the SLO but, say, lets the long prompts wait: the next cheapest mix
    # ($6 is the single flavor's price) is not cheaper, so the single flavor stands.
    tried: list[tuple[tuple[str, int], ...]] = []
    fleets = candidate_fleets(("h100", "l40s"), 4)
    judged: list[tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]] = []

    def as_good_as(mix: tuple[tuple[str, int], ...], single: tuple[tuple[str, int], ...]) -> bool:
        judged.append((mix, single))
        return mix != (("h100", 1), ("l40s", 2))

    single, mix = search_fleets(fleets, _capacity_check(5, tried), as_good_as=as_good_as)
    assert judged[0] == ((("h100", 1), ("l40s", 2)), (("h100", 2), ("l40s", 0)))
    assert single == (("h100", 2), ("l40s", 0))
    assert mix is not None and mix != (("h100", 1), ("l40s", 2))


def test_the_fleet_search_keeps_the_single_flavor_when_no_mix_is_cheaper() -> None:
    tried: list[tuple[tuple[str, int], ...]] = []
    single, mix = search_fleets(candidate_fleets(("h100", "l40s"), 4), _capacity_check(2, tried))
    assert single == mix == (("h100", 0), ("l40s", 2))
    nothing = search_fleets(candidate_fleets(("l40s",), 2), _capacity_check(9, tried))
    assert nothing == (None, None)


def test_headroom_is_the_largest_load_met_without_a_miss_below_it() -> None:
    loads = (1.1, 1.2, 1.3, 1.4)
    tried: list[float] = []

    def meets_up_to(limit: float, lucky: float | None = None) -> Callable[[float], bool]:
        def meets(load: float) -> bool:
            tried.append(load)
            return load <= limit or load == lucky

        return meets

    assert headroom(meets_up_to(1.25), loads) == 1.2
    assert tried == [1.1, 1.2, 1.3]  # stops at the first miss
    # A pass after a miss is noise, not capacity; none at all leaves the load it was chosen at.
    assert headroom(meets_up_to(1.1, lucky=1.4), loads) == 1.1
    assert headroom(meets_up_to(1.0), loads) == 1.0
    assert headroom(meets_up_to(9.0), loads) == 1.4


def test_another_benchmarks_dict_becomes_a_section_with_its_numbers_and_goals() -> None:
    section = section_from_dict(
        "decision",
        "decision time",
        {
            "simulated": False,
            "runs": {
                "round-robin": {"p99_ms": 0.02, "label": "x"},
                "prefix-aware": {"p99_ms": 0.4},
            },
            "goals": [{"name": "p99 (ms)", "target": "<= 1", "value": 0.4, "met": True}],
        },
    )
    assert section.runs == {"round-robin": {"p99_ms": 0.02}, "prefix-aware": {"p99_ms": 0.4}}
    assert not section.simulated
    (goal,) = evaluate_goals(section.goals, section.runs)
    assert (goal.value, goal.met) == (0.4, True)


def test_a_missing_benchmark_module_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trunkline.bench import _routing_external
    from trunkline.bench._routing_common import SimRunner

    monkeypatch.setitem(
        _routing_external.EXTERNAL, "cascade", ("trunkline.bench.no_such_module", "run", "t")
    )
    config = RoutingBenchConfig(sections=("cascade",))
    section = external_section("cascade", config, SimRunner(io.StringIO()))
    assert section.runs == {}
    assert "not importable" in section.notes[0]


def test_a_small_run_writes_each_section_and_a_summary_of_every_goal(tmp_path: Path) -> None:
    config = RoutingBenchConfig(
        sections=("mooncake", "care"),
        candidates=("prefix-only",),
        mooncake_limit=60,
        care_spec="care:duration_s=8,tenants_count=2,preamble_tokens=300",
        max_search_runs=2,
    )
    with (tmp_path / "progress.txt").open("w") as progress:
        summary, sections = run_routing_bench(config, tmp_path, progress=progress)
    assert [section.name for section, _ in sections] == ["mooncake", "care"]
    mooncake = json.loads((tmp_path / "mooncake" / "result.json").read_text())
    assert mooncake["simulated"] is True
    assert set(mooncake["runs"]) == {"round-robin", "least-loaded", "prefix-aware", "prefix-only"}
    assert mooncake["runs"]["round-robin"]["requests"] == 60
    assert 0 < mooncake["runs"]["round-robin"]["oracle_hit_rate"] < 1
    care = json.loads((tmp_path / "care" / "result.json").read_text())
    assert care["runs"]["prefix-aware"]["max_rate"] > 0
    assert (tmp_path / "care" / "care.png").stat().st_size > 0
    top = json.loads((tmp_path / "result.json").read_text())
    assert top["benchmark"] == "routing" and top["simulated"] is True
    assert "mooncake.prefix_hit_rate" in top["runs"]["round-robin"]
    assert len(top["goals"]) == len(mooncake["goals"]) + len(care["goals"]) == 5
    # 4 policies on 2 Mooncake fleets, then at most 2 per care search, two searches per policy
    # (p90 TTFT alone, then p90 TPOT too) that share their first rate.
    assert 8 + 3 <= summary.inputs["simulations"] <= 8 + 3 * 3
    assert care["runs"]["prefix-aware"]["with_tpot_tpot_p90_s"] <= 0.1
    offload = mooncake["runs"]["prefix-aware"]
    # The offload fleet's ceiling is near the unbounded oracle; the plain fleet's is its own KV.
    assert offload["plain_bounded_oracle_hit_rate"] <= offload["bounded_oracle_hit_rate"]
    assert offload["bounded_oracle_hit_rate"] <= offload["oracle_hit_rate"]


def test_the_command_refuses_an_unknown_section(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "routing", "--out", "/tmp/unused", "--sections", "bogus"]) == 2
    assert "unknown section" in capsys.readouterr().err


def test_a_shared_cache_the_size_of_the_fleet_bounds_the_mooncake_ceiling() -> None:
    from trunkline.workloads import mooncake_oracle

    # Three one-block conversations (ids 1, 2, 3), each asked again after the others: an
    # unbounded cache hits every repeat, a cache of two blocks only the most recent two.
    records = [([1], 512), ([2], 512), ([3], 512), ([3], 512), ([1], 512)]
    unbounded = mooncake_oracle(records, 16)
    assert mooncake_oracle(records, 16, capacity_tokens=10**9) == unbounded
    bounded = mooncake_oracle(records, 16, capacity_tokens=2 * 512)
    assert unbounded.block_hit_rate == pytest.approx(2 / 5)
    assert bounded.block_hit_rate == pytest.approx(1 / 5)  # 3 is held, 1 was evicted by 3
    assert bounded.token_hit_rate < unbounded.token_hit_rate
    with pytest.raises(ValueError, match="capacity_tokens"):
        mooncake_oracle(records, 16, capacity_tokens=0)


def test_an_lru_oracle_evicts_a_conversations_tail_before_its_head() -> None:
    from trunkline.workloads import mooncake_oracle

    # A two-block prompt (ids 1 -> 2), then an unrelated block: with room for two blocks the
    # tail (2) goes and the head (1) stays, so asking 1 -> 2 again hits its first block.
    records = [([1, 2], 1024), ([9], 512), ([1, 2], 1024)]
    bounded = mooncake_oracle(records, 16, capacity_tokens=2 * 512)
    assert bounded.block_hit_rate == pytest.approx(1 / 5)
