"""When a usage event may say it started, for the ledger to take it.

A gateway stamps each event with its own clock. One whose clock is wrong stamps usage at an
instant no bill can hold: at the epoch (a clock reset), before any price book version (no
price rates it: every billing close stopped on it), or ahead of the present (billed, unseen,
in an hour or a month to come, and the key's "last used" shows that future for good). Such an
event is set aside in the dead-letter stream with the reason (nothing lost, nothing billed at
a wrong time). Usage arriving late, a gateway that held its events through a Redis outage for
hours or days, is not misdated: it is billed in its own hour, or as a correction of a closed
month, as ever.
"""

from __future__ import annotations

from datetime import UTC, datetime

MAX_AHEAD_S = 900.0
"""How far ahead of the worker's clock an event may be stamped by default: far beyond the
drift of a clock kept by NTP (milliseconds), and at most one hour of the price book (prices
change on UTC hours) from where a correct clock would have put it."""


def misdated(
    started_at: float, *, priced_from: datetime, now: float, max_ahead_s: float
) -> str | None:
    """Why an event stamped ``started_at`` (Unix seconds) is not taken into the ledger at
    ``now`` (the worker's clock, Unix seconds), or None: it is before ``priced_from`` (the
    first price book version), or more than ``max_ahead_s`` ahead of ``now``."""
    if started_at < priced_from.timestamp():
        return (
            f"started at {_shown(started_at)}, before the first price book version "
            f"(from {_shown(priced_from.timestamp())}): no price bills it (is the gateway's "
            "clock wrong?)"
        )
    if started_at - now > max_ahead_s:
        return (
            f"started at {_shown(started_at)}, {started_at - now:.0f} s ahead of the time it "
            f"was ingested ({_shown(now)}), more than the {max_ahead_s:g} s allowed (is the "
            "gateway's clock ahead?)"
        )
    return None


def _shown(seconds: float) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S} UTC"
