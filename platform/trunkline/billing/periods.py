"""Billing periods: calendar months in UTC, written ``YYYY-MM``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from trunkline.errors import InvalidRequest

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")
_YEARS = range(1, 9999)
"""Years a period may fall in: its end, the next month's first instant, must be a datetime."""


@dataclass(frozen=True, slots=True, order=True)
class Period:
    start: datetime
    end: datetime
    """Exclusive: the first instant of the next period."""

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def next(self) -> Period:
        return month_of(self.end)

    def previous(self) -> Period:
        year, month = self.start.year, self.start.month - 1
        if month == 0:
            year, month = year - 1, 12
        return month_of(datetime(year, month, 1, tzinfo=UTC))


def month_of(moment: datetime) -> Period:
    """The billing period ``moment`` falls in."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return Period(start, datetime(year, month, 1, tzinfo=UTC))


def parse_period(text: str) -> Period:
    """``2026-11`` → November 2026 (UTC)."""
    match = _PERIOD.match(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise InvalidRequest(f"period {text!r} must read YYYY-MM, e.g. 2026-11", param="period")
    if int(match.group(1)) not in _YEARS:
        raise InvalidRequest(
            f"period {text!r}: the year must be from {_YEARS.start} to {_YEARS.stop - 1}",
            param="period",
        )
    return month_of(datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC))
