"""Billing periods are UTC calendar months written YYYY-MM."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trunkline.billing.periods import month_of, parse_period
from trunkline.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("2028-02", datetime(2028, 2, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)),
    ],
)
def test_parse(text: str, start: datetime, end: datetime) -> None:
    period = parse_period(text)
    assert (period.start, period.end, period.label) == (start, end, text)


@pytest.mark.parametrize(
    "text",
    # The last: fullwidth digits, which ``\d`` would take.
    [
        "2026-13",
        "2026-00",
        "26-11",
        "2026/11",
        "november",
        "0000-01",
        "9999-12",
        "\uff12\uff10\uff12\uff16-\uff11\uff11",
    ],
)
def test_invalid_periods_are_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_period(text)


def test_a_period_out_of_the_years_says_so() -> None:
    with pytest.raises(InvalidRequest, match="the year must be from 1 to 9998"):
        parse_period("0000-01")


def test_month_of_uses_utc() -> None:
    late_evening_in_new_york = datetime(2026, 11, 30, 20, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert month_of(late_evening_in_new_york).label == "2026-12"
    assert parse_period("2026-01").previous().label == "2025-12"
