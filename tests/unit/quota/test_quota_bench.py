"""The pieces of ``trunkline bench quota-accuracy`` that decide its figures (no servers)."""

from __future__ import annotations

import pytest

from trunkline.bench._quota_gateway import SettleAfterResponse
from trunkline.bench._quota_load import Record, body, one_reservation
from trunkline.bench.quota_accuracy import BASELINE, GOALS, RESERVE, QuotaAccuracyConfig, _metrics
from trunkline.bench.report import evaluate_goals
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.quota.limits import Limits
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.store import ReserveRequest, Scope

NOW = 1_800_000_000_000
MINUTE = NOW // 60_000


async def admitted(store: SettleAfterResponse, tenant: str, count: int) -> list[bool]:
    scopes = (Scope("tenant", tenant, Limits(tokens_per_minute=1000).vector()),)
    out = []
    for index in range(count):
        request = ReserveRequest(f"r{index}", tenant, scopes, 400, 0, NOW, 60_000, 3_600_000)
        out.append((await store.reserve(request)).verdict.admitted)
    return out


async def test_the_baseline_admits_while_below_the_limit_and_trunkline_reserves() -> None:
    store = SettleAfterResponse(InMemoryQuotaStore(), "baseline")
    assert await admitted(store, "baseline", 4) == [True] * 4, "nothing charged until settled"
    assert await admitted(store, "trunkline", 4) == [True, True, False, False]


def test_one_reservation_is_what_the_gateway_reserves_for_the_largest_request() -> None:
    assert one_reservation(250) == estimate_prompt_tokens("chat", body(250)) + 250


def test_metrics_and_goals_come_from_the_window_counters() -> None:
    config = QuotaAccuracyConfig(limit=1000, windows=2)
    minutes = [MINUTE, MINUTE + 1]
    records = [
        Record(BASELINE, MINUTE * 60 + 1, 200, 600),
        Record(BASELINE, MINUTE * 60 + 2, 429, 0),
    ]
    baseline = _metrics(config, BASELINE, {MINUTE: 1300, MINUTE + 1: 900}, records, minutes, 200)
    reserve_ = _metrics(config, RESERVE, {MINUTE: 1000, MINUTE + 1: 950}, records, minutes, 200)

    assert (
        baseline["max_over_limit_tokens"] == 300 and baseline["max_over_limit_reservations"] == 1.5
    )
    assert (baseline["requests_admitted"], baseline["requests_refused"]) == (1, 1)
    assert reserve_["max_over_limit_tokens"] == 0 and reserve_["mean_limit_used"] == 0.975
    goals = evaluate_goals(GOALS, {BASELINE: baseline, RESERVE: reserve_})
    assert [g.met for g in goals] == [True, True]


@pytest.mark.parametrize(
    "bad", [{"windows": 0}, {"clients": 0}, {"min_tokens": 300, "max_tokens": 200}, {"limit": 0}]
)
def test_nonsense_configurations_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="need"):
        QuotaAccuracyConfig(**bad)
