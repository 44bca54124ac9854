"""Which start times the ledger takes: from the first price book version on, and up to a
bounded skew ahead of the worker's clock; late usage, however late, is taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trunkline.metering.stamps import misdated

PRICED_FROM = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 12, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("started", "reason"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), "before the first price book version"),
        (PRICED_FROM - timedelta(seconds=1), "before the first price book version"),
        (PRICED_FROM, None),
        (NOW - timedelta(days=40), None),  # held by a gateway through an outage: a correction
        (NOW, None),
        (NOW + timedelta(seconds=900), None),
        (NOW + timedelta(seconds=901), "901 s ahead of the time it was ingested"),
        (datetime(2099, 1, 1, tzinfo=UTC), "ahead of the time it was ingested"),
    ],
)
def test_start_times_the_ledger_takes(started: datetime, reason: str | None) -> None:
    why = misdated(
        started.timestamp(), priced_from=PRICED_FROM, now=NOW.timestamp(), max_ahead_s=900
    )
    assert why is None if reason is None else why is not None and reason in why


def test_a_reason_says_when_the_event_started_and_the_bound_it_passed() -> None:
    started = NOW + timedelta(hours=2)
    why = misdated(
        started.timestamp(), priced_from=PRICED_FROM, now=NOW.timestamp(), max_ahead_s=60
    )
    assert why is not None
    assert "2026-12-10 14:00:00 UTC" in why and "the 60 s allowed" in why
