"""When a usage event may say it started, for the ledger to take it.

A gateway stamps each event with its own clock. One whose clock is wrong stamps usage at an
instant no bill can hold: at the epoch (a clock reset), before any price book version (no
price rates it: every billing close stopped on it), or ahead of the present (billed, unseen,
in an hour or a month to come, and the key's "last used" shows that future for good). Such an
event is set aside in the dead-letter stream with the reason (nothing lost, nothing billed at
a wrong time). Usage arriving late, a gateway that held its events through a Redis outage for
hours or days, is not misdated: it is billed in its own hour, or as a correction of a closed
month, as ever.

"Ahead" is judged against when the event entered the usage stream, where the stream says
(``entered_stream_at``): one clock for every worker (Redis's), and never before the event
really happened, so a worker's wrong clock judges nothing, and every worker judges an event
alike. Where it does not say, the worker's clock at ingest stands for it.
"""

from __future__ import annotations

from datetime import UTC, datetime

MAX_AHEAD_S = 900.0
"""How far ahead of the time it entered the usage stream an event may be stamped by default:
far beyond the drift of a clock kept by NTP (milliseconds), and at most one hour of the price
book (prices change on UTC hours) from where a correct clock would have put it."""

ENTERED_STREAM = "the time it entered the usage stream"
WORKER_CLOCK = "the worker's clock when it was ingested"
CHECKED = "the time it was checked"
"""What the reference of ``misdated`` is, as its reason names it."""


def misdated(
    started_at: float,
    *,
    priced_from: datetime,
    reference: float,
    max_ahead_s: float,
    reference_is: str = ENTERED_STREAM,
) -> str | None:
    """Why an event stamped ``started_at`` (Unix seconds) is not taken into the ledger, or
    None: it is before ``priced_from`` (the first price book version), or more than
    ``max_ahead_s`` ahead of ``reference`` (Unix seconds; what it is: ``reference_is``)."""
    if started_at < priced_from.timestamp():
        return (
            f"started at {_shown(started_at)}, before the first price book version "
            f"(from {_shown(priced_from.timestamp())}): no price bills it (is the gateway's "
            "clock wrong?)"
        )
    if started_at - reference > max_ahead_s:
        return (
            f"started at {_shown(started_at)}, {started_at - reference:.0f} s ahead of "
            f"{reference_is} ({_shown(reference)}), more than the {max_ahead_s:g} s allowed "
            "(is the gateway's clock ahead?)"
        )
    return None


def entered_stream_at(message_id: str) -> float | None:
    """When (Unix seconds) the usage stream's entry ``message_id`` entered it, or None where
    the id does not say. Both streams name an entry ``<ms>-<seq>``, ``ms`` the stream's clock
    when it was added: Redis's own (the same for every worker, and monotonic: an entry id is
    never below the last one's), or the embedded process's."""
    ms, dash, seq = message_id.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit()):
        return None
    return int(ms) / 1000


def _shown(seconds: float) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S} UTC"
