"""Which start times the ledger takes: from the first price book version on, and up to a
bounded skew ahead of the time the event entered the usage stream; late usage, however late,
is taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trunkline.metering.stamps import WORKER_CLOCK, entered_stream_at, misdated

PRICED_FROM = datetime(2026, 1, 1, tzinfo=UTC)
ENTERED = datetime(2026, 12, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("started", "reason"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), "before the first price book version"),
        (PRICED_FROM - timedelta(seconds=1), "before the first price book version"),
        (PRICED_FROM, None),
        (ENTERED - timedelta(days=40), None),  # held by a gateway through an outage
        (ENTERED, None),
        (ENTERED + timedelta(seconds=900), None),
        (ENTERED + timedelta(seconds=901), "901 s ahead of the time it entered the usage stream"),
        (datetime(2099, 1, 1, tzinfo=UTC), "ahead of the time it entered the usage stream"),
    ],
)
def test_start_times_the_ledger_takes(started: datetime, reason: str | None) -> None:
    why = misdated(
        started.timestamp(),
        priced_from=PRICED_FROM,
        reference=ENTERED.timestamp(),
        max_ahead_s=900,
    )
    assert why is None if reason is None else why is not None and reason in why


def test_a_reason_says_when_the_event_started_and_the_bound_it_passed() -> None:
    started = ENTERED + timedelta(hours=2)
    why = misdated(
        started.timestamp(),
        priced_from=PRICED_FROM,
        reference=ENTERED.timestamp(),
        max_ahead_s=60,
    )
    assert why is not None
    assert "2026-12-10 14:00:00 UTC" in why and "the 60 s allowed" in why
    assert "ahead of the time it entered the usage stream (2026-12-10 12:00:00 UTC)" in why


def test_a_reason_names_the_clock_it_was_judged_by() -> None:
    """Where the stream says no entry time, the worker's clock stands for it: an operator
    reading the reason knows a worker's clock, not the gateway's, may be the wrong one."""
    why = misdated(
        (ENTERED + timedelta(hours=1)).timestamp(),
        priced_from=PRICED_FROM,
        reference=ENTERED.timestamp(),
        max_ahead_s=900,
        reference_is=WORKER_CLOCK,
    )
    assert why is not None and "3600 s ahead of the worker's clock when it was ingested" in why


ENTERED_MS = int(ENTERED.timestamp() * 1000)


@pytest.mark.parametrize(
    ("message_id", "entered"),
    [
        (f"{ENTERED_MS}-0", ENTERED.timestamp()),  # Redis's <ms>-<seq>
        (f"{ENTERED_MS + 250}-42", ENTERED.timestamp() + 0.25),
        ("7", None),  # an id that says no time: the worker's clock stands for it
        ("entry-1", None),
        (f"{ENTERED_MS}-", None),
        ("-0", None),
    ],
)
def test_when_an_entry_entered_the_stream_is_read_from_its_id(
    message_id: str, entered: float | None
) -> None:
    assert entered_stream_at(message_id) == entered
