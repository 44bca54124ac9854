"""The pure part of rollups: hour buckets and tenant-hour ranges (what a run writes is tested
through the job, in test_rollups.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from trunkline.metering.rollup_plan import hour_of, hour_ranges

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
