"""The pure part of rollups: hour buckets, tenant-hour ranges, and the change plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from trunkline.metering.rollup_plan import Measures, RollupKey, hour_of, hour_ranges, plan_changes

T1, T2 = uuid.UUID(int=1), uuid.UUID(int=2)
H = datetime(2026, 11, 3, 10, tzinfo=UTC)


def hour(n: int) -> datetime:
    return H + timedelta(hours=n)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 3, 10, 59, 59, 999999, tzinfo=UTC), H),
        (datetime(2026, 11, 3, 10, 0, tzinfo=UTC), H),
        (datetime(2026, 11, 3, 12, 30, tzinfo=timezone(timedelta(hours=2))), H),
    ],
)
def test_hour_of(moment: datetime, expected: datetime) -> None:
    assert hour_of(moment) == expected


@pytest.mark.parametrize(
    ("tenant_hours", "ranges"),
    [
        ([], []),
        ([(T1, hour(0))], [(T1, hour(0), hour(1))]),
        ([(T1, hour(2)), (T1, hour(0)), (T1, hour(1))], [(T1, hour(0), hour(3))]),
        ([(T1, hour(0)), (T1, hour(2))], [(T1, hour(0), hour(1)), (T1, hour(2), hour(3))]),
        (
            [(T2, hour(0)), (T1, hour(0)), (T1, hour(0))],
            [(T1, hour(0), hour(1)), (T2, hour(0), hour(1))],
        ),
    ],
)
def test_hour_ranges_merge_consecutive_hours_of_a_tenant(
    tenant_hours: list[tuple[uuid.UUID, datetime]],
    ranges: list[tuple[uuid.UUID, datetime, datetime]],
) -> None:
    assert hour_ranges(tenant_hours) == ranges


def key(outcome: str = "completed", tenant: uuid.UUID = T1) -> RollupKey:
    return (tenant, H, T2, "key", "model", "pool", "gold", "eu", "h100", outcome)


@pytest.mark.parametrize(
    ("existing", "fresh", "inserts", "updates", "deletes"),
    [
        ({}, {key(): Measures(1)}, [key()], [], []),
        ({key(): Measures(1)}, {key(): Measures(1)}, [], [], []),  # a rerun writes nothing
        ({key(): Measures(1)}, {key(): Measures(2)}, [], [key()], []),
        (
            {key(): Measures(1), key("failed"): Measures(1)},
            {key(): Measures(1), key("failed"): Measures(1, slo_eligible=1)},
            [],
            [key("failed")],
            [],
        ),
        ({key(): Measures(1)}, {}, [], [], [key()]),
    ],
)
def test_plan_touches_exactly_what_changed(
    existing: dict[RollupKey, Measures],
    fresh: dict[RollupKey, Measures],
    inserts: list[RollupKey],
    updates: list[RollupKey],
    deletes: list[RollupKey],
) -> None:
    plan = plan_changes(existing, fresh)
    assert (list(plan.inserts), list(plan.updates), plan.deletes) == (inserts, updates, deletes)
