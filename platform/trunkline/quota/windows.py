"""The UTC windows quotas are counted in: the minute, the day and the calendar month of an instant.

Windows are fixed and aligned to UTC (a minute runs from :00.000 to :59.999; a month from the
1st 00:00 UTC), so every gateway replica and every store agrees on which window a reservation
falls in. Instants are integer milliseconds since the epoch, read from an injectable clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final, NamedTuple

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
MINUTE_GRACE_MS: Final = MINUTE_MS
"""Counters outlive their window a little, so a late settle still finds them."""
DAY_GRACE_MS: Final = 3_600_000
MONTH_GRACE_MS: Final = DAY_MS

Clock = Callable[[], int]
"""Milliseconds since the epoch."""


def system_clock() -> int:
    return time.time_ns() // 1_000_000


class Windows(NamedTuple):
    """The windows an instant falls in, and when each of them ends (epoch ms)."""

    now_ms: int
    minute: int
    """Minutes since the epoch."""
    day: int
    """UTC days since the epoch."""
    month: int
    """``year * 12 + month - 1``."""
    minute_end_ms: int
    day_end_ms: int
    month_end_ms: int

    def ttls_ms(self) -> tuple[int, int, int]:
        """How long counters of the minute, the day and the month must be kept from now."""
        return (
            self.minute_end_ms - self.now_ms + MINUTE_GRACE_MS,
            self.day_end_ms - self.now_ms + DAY_GRACE_MS,
            self.month_end_ms - self.now_ms + MONTH_GRACE_MS,
        )


def windows_at(now_ms: int) -> Windows:
    minute, day = now_ms // MINUTE_MS, now_ms // DAY_MS
    month, month_end_ms = _month_of_day(day)
    return Windows(
        now_ms, minute, day, month, (minute + 1) * MINUTE_MS, (day + 1) * DAY_MS, month_end_ms
    )


@lru_cache(maxsize=8)
def _month_of_day(day: int) -> tuple[int, int]:
    """The month index of a UTC day and the epoch ms at which that month ends."""
    date = datetime.fromtimestamp(day * 86_400, UTC)
    month = date.year * 12 + date.month - 1
    next_year, next_month = divmod(month + 1, 12)
    end = datetime(next_year, next_month + 1, 1, tzinfo=UTC)
    return month, int(end.timestamp()) * 1000


def month_label(month: int) -> str:
    year, index = divmod(month, 12)
    return f"{year:04d}-{index + 1:02d}"


def iso_utc(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
