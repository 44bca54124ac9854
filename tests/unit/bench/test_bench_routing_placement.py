"""``trunkline bench routing``'s placement section: replica sizing, prefill chunks,
prefill/decode fleets and the ideal bounds of mixing flavors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trunkline.bench._routing_ideal import best_pair, ideal_mix_ratio, work_costs
from trunkline.bench._routing_placement import Engine, cheapest_placement, fewest, tune_chunk
from trunkline.workloads import CareWorkload, MixedWorkload


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
