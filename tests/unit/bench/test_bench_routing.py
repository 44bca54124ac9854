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
from trunkline.bench._routing_placement import (
    Engine,
    best_pair,
    cheapest_placement,
    fewest,
    ideal_mix_ratio,
    tune_chunk,
    work_costs,
)
from trunkline.bench._routing_search import find_operating_point, goodput_rps, meets_slo
from trunkline.bench._routing_tiers import by_tier
from trunkline.bench._routing_tiers import ratios as tier_ratios
from trunkline.bench.report import GoalSpec, Metrics, Runs, evaluate_goals
from trunkline.bench.routing import merge_sections, parse_sections, run_routing_bench
from trunkline.cli.main import main
from trunkline.fleet import RequestOutcome
from trunkline.workloads import CareWorkload, MixedWorkload


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


def test_fewest_replicas_doubles_then_bisects_and_gives_up_at_the_limit() -> None:
    tried: list[int] = []

    def meets(n: int) -> bool:
        tried.append(n)
        return n >= 11

    assert fewest(meets) == 11
    assert tried == [1, 2, 4, 8, 16, 12, 10, 11]
    assert fewest(lambda n: n >= 70, limit=64) is None
    assert fewest(lambda n: True) == 1


def test_the_cheapest_placement_sizes_each_class_on_its_own_then_both_together() -> None:
    tried: list[tuple[int, int]] = []

    def meets(long: int, short: int) -> tuple[bool, bool]:
        # The long class needs 3 replicas; the short one 5, or 6 once the long pool is this small
        # (say, failover): so sizing each alone is not enough.
        tried.append((long, short))
        return long >= 3, short >= (6 if long < 4 else 5)

    assert cheapest_placement(meets, long_limit=10, short_limit=20) == (3, 6)
    assert tried[-2:] == [(3, 5), (3, 6)]
    assert max(long for long, _ in tried) == 10  # the short class was sized with the long at 10


def test_the_cheapest_prefill_decode_fleet_tries_each_decode_count_under_the_budget() -> None:
    from trunkline.bench._routing_placement import _cheapest_disaggregated

    tried: list[tuple[int, int]] = []

    def meets(shape: tuple[tuple[Engine, int], ...]) -> bool:
        # 1 decoder needs 9 L40S prefilling ($9 + $3.8); 2 need 6 ($6 + $7.6); 3 need 5.
        (prefill, n), (decode, m) = shape
        assert (prefill.role, decode.role) == ("prefill", "decode")
        tried.append((n, m))
        return n >= {1: 9, 2: 6, 3: 5}[m]

    decode = Engine("h200", role="decode")
    shape = _cheapest_disaggregated(meets, decode, budget=20.0)
    assert shape is not None
    assert [(engine.flavor, n) for engine, n in shape] == [("l40s", 9), ("h200", 1)]
    # Once $12.8 is found, a fleet must cost less: 2 decoders ($7.6) leave room for 5 L40S,
    # 3 ($11.4) for 1, and neither is tried with more.
    assert max(n for n, m in tried if m == 2) == 5
    assert max(n for n, m in tried if m == 3) == 1
    # No fleet under the budget: none.
    assert _cheapest_disaggregated(meets, decode, budget=12.0) is None


def test_the_cheapest_placement_gives_up_when_a_class_misses_at_its_limit() -> None:
    assert cheapest_placement(lambda a, b: (True, False), long_limit=3, short_limit=3) is None
    assert cheapest_placement(lambda a, b: (a >= 2, True), long_limit=3, short_limit=3) == (2, 1)
    # The long class meets only beside a full short pool: together with one short replica it
    # gets one more replica at a time, up to its limit, and never meets.
    together: list[tuple[int, int]] = []

    def only_alone(long: int, short: int) -> tuple[bool, bool]:
        together.append((long, short))
        return short == 3, True

    assert cheapest_placement(only_alone, long_limit=3, short_limit=3) is None
    assert together[-1] == (3, 1)


def test_the_prefill_chunk_is_the_half_of_vllms_needing_fewest_replicas() -> None:
    asked: list[tuple[int | None, int]] = []

    def fewest_with(needs: dict[int | None, int]) -> Callable[[int | None, int], int | None]:
        def count(chunk: int | None, limit: int) -> int | None:
            asked.append((chunk, limit))
            return needs[chunk] if needs[chunk] <= limit else None

        return count

    # vLLM's 8,192 needs 7 replicas, as 4,096 does; 2,048 needs 4, as 1,024 does; 512 and 256
    # need more. Each is only asked whether it does with fewer than the best so far.
    needs = {None: 7, 4096: 7, 2048: 4, 1024: 4, 512: 5, 256: 9}
    assert tune_chunk(fewest_with(needs), 8192) == (2048, 4)
    assert asked == [(None, 64), (4096, 6), (2048, 6), (1024, 3), (512, 3), (256, 3)]
    # Halving stops at 256 (128 would need 1), and at one replica.
    assert tune_chunk(fewest_with({None: 9, 512: 5, 256: 3, 128: 1}), 1024) == (256, 3)
    asked.clear()
    assert tune_chunk(fewest_with({None: 8, 1024: 1, 512: 1}), 2048) == (1024, 1)
    assert asked == [(None, 64), (1024, 7)]
    # A flavor that misses the SLO with every chunk tried.
    assert tune_chunk(lambda chunk, limit: None, 2048) is None


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


def test_the_ideal_mix_puts_each_class_on_its_cheapest_flavor_against_the_cheapest_single() -> None:
    costs = {"long": {"l40s": 5.0, "h100": 6.0}, "short": {"l40s": 10.0, "h100": 8.0}}
    assert ideal_mix_ratio(costs) == pytest.approx((5 + 8) / 14)  # one flavor: 15 or 14
    assert ideal_mix_ratio({"long": {"l40s": 1.0, "h100": 2.0}}) == 1.0


def test_work_costs_price_prefill_and_decoding_at_each_flavors_rates() -> None:
    def costs(answer_tokens: float) -> dict[str, dict[str, float]]:
        care = CareWorkload(
            duration_s=10, rate=1.0, preamble_tokens=3000, answer_tokens=answer_tokens
        )
        return work_costs(MixedWorkload((care,)), ("l40s", "h100"))

    prefill_heavy, decode_heavy = costs(10.0), costs(2000.0)
    # Every prompt is past 2,048 tokens: all the work is the long class's.
    assert prefill_heavy["short"] == {"l40s": 0.0, "h100": 0.0}
    # The L40S buys more prefill per dollar, the H100 more decoding.
    assert prefill_heavy["long"]["l40s"] < prefill_heavy["long"]["h100"]
    assert decode_heavy["long"]["h100"] < decode_heavy["long"]["l40s"]


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


def test_the_best_pair_is_the_one_saving_most_against_its_own_cheaper_flavor() -> None:
    costs = {
        "prefill": {"l40s": 4.0, "h100": 6.0, "h200": 7.0},
        "decode": {"l40s": 10.0, "h100": 8.0, "h200": 6.0},
    }
    # l40s + h100: (4 + 8) / 14; l40s + h200: (4 + 6) / 13; h100 + h200: (6 + 6) / 13.
    assert best_pair(costs) == (pytest.approx(10 / 13), ("h200", "l40s"))
    with pytest.raises(ValueError, match="two flavors"):
        best_pair({"prefill": {"l40s": 1.0}})


def test_work_costs_by_phase_price_all_prompts_apart_from_all_answers() -> None:
    care = CareWorkload(duration_s=10, rate=1.0, preamble_tokens=3000, answer_tokens=50.0)
    by_class = work_costs(MixedWorkload((care,)), ("l40s", "h100"))
    by_phase = work_costs(MixedWorkload((care,)), ("l40s", "h100"), by="phase")
    assert set(by_phase) == {"prefill", "decode"}
    for flavor in ("l40s", "h100"):
        total = sum(costs[flavor] for costs in by_class.values())
        assert sum(costs[flavor] for costs in by_phase.values()) == pytest.approx(total)
    # Prefill is the L40S's per dollar, decoding the H100's: splitting by phase saves more.
    assert ideal_mix_ratio(by_phase) < ideal_mix_ratio(by_class)
    with pytest.raises(ValueError, match="by must be"):
        work_costs(MixedWorkload((care,)), ("l40s",), by="tier")
